using System.Buffers.Binary;
using Motr.Be;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Runtime;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Cli.Tests;

/// <summary>Edge cases of load, fsck and recovery's slot rewrite found by a review of the CLI change (each failed before its fix).</summary>
public sealed class CliEdgeTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), $"motr-cli-edge-{Environment.ProcessId}-{Guid.NewGuid():N}");
    public CliEdgeTests() => Directory.CreateDirectory(_root);
    public void Dispose() { try { Directory.Delete(_root, true); } catch (IOException) { } }

    private static DomainOptions Options(string dir) => CliHarness.Options(dir);
    private static byte[] Key(int i) => CliHarness.Key(i);
    private static Task<(int Code, string Out, string Err)> Motr(params string[] args) => CliHarness.Motr(args);

    private static async Task<Tree> Fill(Segment seg, string name, int n)
    {
        var t = await CliHarness.CreateTree(seg, name);
        for (int i = 0; i < n; i++)
        {
            using var tx = await seg.BeginAsync(t.InsertCredit(8, 40));
            t.Insert(tx, Key(i), new byte[40]);
            _ = tx.Close();
        }
        await seg.FlushAsync();
        return t;
    }


    // The rename did SetRoot(name) before RemoveRoot(LoadingRoot): with 38 of 39 roots used the load failed only after
    // loading everything, leaving the complete tree under 'motr-load-in-progress'.
    [Fact]
    public async Task Load_into_a_segment_with_one_free_root_slot_succeeds()
    {
        string dir = Path.Combine(_root, "d");
        await using (var engine = await Engine.OpenAsync(Options(dir)))
        {
            var l1 = engine.Localities[0]; var l2 = engine.Localities[1];
            await l2.RunAsync(() => Fill(l2.Segment!, "u", 300));
            await l1.RunAsync(async () =>
            {
                var seg = l1.Segment!;
                var t = await Fill(seg, "t", 10);
                for (int i = 0; i < Segment.MaxRoots - 2; i++)   // 't' + 37 = 38 roots: one free
                {
                    using var tx = await seg.BeginAsync(Segment.RootCredit);
                    seg.SetRoot(tx, $"alias{i}", t.Offset);
                    await tx.Close();
                }
            });
        }
        string file = Path.Combine(_root, "u.dump");
        Assert.Equal(0, (await Motr("dump", dir, "u", file, "--segment", "2")).Code);
        var (code, output, err) = await Motr("load", dir, file, "x");
        Assert.True(code == 0, $"exit {code}\n{output}\n{err}");
    }

    // A root naming a destroyed tree (Destroy zeroes the magic and does not reseal) was reported as a damaged magic.
    [Fact]
    public async Task A_root_naming_a_destroyed_tree_is_not_a_damaged_magic()
    {
        string dir = Path.Combine(_root, "d");
        await using (var engine = await Engine.OpenAsync(Options(dir)))
        {
            var l1 = engine.Localities[0];
            await l1.RunAsync(async () =>
            {
                var seg = l1.Segment!;
                var t = await Fill(seg, "gone", 0);
                using var tx = await seg.BeginAsync(Tree.DestroyCredit);
                t.Destroy(tx);
                await tx.Close();
            });
        }
        var (code, output, err) = await Motr("fsck", dir);
        Assert.True(code == 1, output + err);
        Assert.DoesNotContain("damaged magic", output);
        Assert.Contains("root 'gone' (0x", output);
        Assert.Contains("names a destroyed b+tree", output);
    }

    // A stale 'motr-load-in-progress' whose header is damaged blocked every later load, and nothing removed it.
    [Fact]
    public async Task A_damaged_stale_loading_tree_does_not_block_loads_forever()
    {
        string dir = Path.Combine(_root, "d");
        long hdr = 0;
        await using (var engine = await Engine.OpenAsync(Options(dir)))
        {
            var l1 = engine.Localities[0]; var l2 = engine.Localities[1];
            await l2.RunAsync(() => Fill(l2.Segment!, "u", 300));
            hdr = await l1.RunAsync(async () => (await Fill(l1.Segment!, TreeFileCommands.LoadingRoot, 50)).Offset);
        }
        string seg1 = Path.Combine(dir, BeConstants.SegmentFileName(1));
        var bytes = File.ReadAllBytes(seg1);
        bytes[hdr + 20] ^= 0xFF;
        File.WriteAllBytes(seg1, bytes);
        string file = Path.Combine(_root, "u.dump");
        Assert.Equal(0, (await Motr("dump", dir, "u", file, "--segment", "2")).Code);
        for (int k = 0; k < 2; k++)
        {
            var (code, output, err) = await Motr("load", dir, file, "x" + k);
            Assert.True(code == 0, $"attempt {k}: exit {code}\n{output}\n{err}");
            if (k == 0) Assert.Contains("only its name 'motr-load-in-progress' is removed", err);
        }
    }

    // A header slot skipped because its version is newer than this build reads (a newer build's checkpoint, not
    // damage) was overwritten with the older checkpoint when nothing was replayed, by fsck too (now by fsck --recover,
    // the fsck that writes recovery's work).
    [Fact]
    public async Task Fsck_does_not_overwrite_a_newer_builds_header_slot()
    {
        string dir = Path.Combine(_root, "d");
        await using (var engine = await Engine.OpenAsync(Options(dir)))
        {
            var l1 = engine.Localities[0];
            await l1.RunAsync(() => Fill(l1.Segment!, "t", 200));
        }
        string log = Path.Combine(dir, BeConstants.LogFileName);
        var b = File.ReadAllBytes(log);
        int newest = BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(48)) > BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(512 + 48)) ? 0 : 512;
        int older = 512 - newest;
        long areaOffset = BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(32));
        // A newer build (log version 4) wrote the newest checkpoint and records this build cannot read.
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(newest + 8), BeConstants.LogVersion + 1);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(newest + 124), Crc32C.Compute(b.AsSpan(newest, 124)));
        Array.Clear(b, (int)areaOffset, b.Length - (int)areaOffset);
        File.WriteAllBytes(log, b);
        var before = b.AsSpan(newest, 128).ToArray();
        Assert.NotEqual(BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(newest + 56)), BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(older + 56)));
        var (code, output, err) = await Motr("fsck", dir, "--recover");
        var after = File.ReadAllBytes(log).AsSpan(newest, 128).ToArray();
        Assert.True(before.AsSpan().SequenceEqual(after), $"fsck exit {code}: {output}{err}\nslot rewritten: version {BinaryPrimitives.ReadUInt32LittleEndian(after.AsSpan(8))} checkpoint {BinaryPrimitives.ReadInt64LittleEndian(after.AsSpan(56))} (was {BinaryPrimitives.ReadInt64LittleEndian(before.AsSpan(56))})");
    }
}
