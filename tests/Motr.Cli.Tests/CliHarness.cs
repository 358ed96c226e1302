using Motr.Be;
using Motr.Be.BTree;
using Motr.Be.Segments;

namespace Motr.Cli.Tests;

/// <summary>What the CLI test classes share: the domain shape they build, their keys, and running the command in process.</summary>
internal static class CliHarness
{
    /// <summary>Two segments of 4 MiB and an 8 MiB log in <paramref name="dir"/>.</summary>
    public static DomainOptions Options(string dir) =>
        new() { Path = dir, Segments = 2, SegmentSize = 4 << 20, LogSize = 8 << 20 };

    /// <summary>Key i: 8 bytes spread over the key space.</summary>
    public static byte[] Key(int i) => BitConverter.GetBytes((ulong)i * 0x9E3779B97F4A7C15UL);

    /// <summary>A new empty tree of 1 KiB nodes named <paramref name="name"/> in <paramref name="seg"/>, durable.</summary>
    public static async Task<BTree> CreateTree(Segment seg, string name)
    {
        using var tx = await seg.BeginAsync(BTree.CreateCredit + Segment.RootCredit);
        var t = BTree.Create(tx, seg, new BTreeConfig { NodeSize = 1024 });
        seg.SetRoot(tx, name, t.Offset);
        await tx.Close();
        return t;
    }

    /// <summary>Runs <c>motr</c> with <paramref name="args"/> in process; returns its exit code, stdout and stderr.</summary>
    public static async Task<(int Code, string Out, string Err)> Motr(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = await MotrCommand.RunAsync(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }
}
