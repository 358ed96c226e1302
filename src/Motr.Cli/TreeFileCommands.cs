using Motr.Be;
using Motr.Be.BTree;
using Motr.Runtime;

namespace Motr.Cli;

/// <summary><c>motr dump</c> and <c>motr load</c>: a named b+tree to and from a <see cref="BTreeDump"/> file.</summary>
internal static class TreeFileCommands
{
    public static async Task<int> DumpAsync(MotrCommand.Arguments a, TextWriter stdout, TextWriter stderr)
    {
        string folder = a.Positional[0], root = a.Positional[1], file = a.Positional[2];
        await using var engine = await Engine.OpenAsync(MotrCommand.OpenExisting(folder, stderr));
        var loc = LocalityOf(engine, a.Segment);
        // A new file beside the target, renamed over it once complete: an interrupted dump leaves no half file under the name.
        string partial = file + ".partial";
        long records;
        try
        {
            records = await loc.RunAsync(() => SaveAsync(loc, a.Segment, root, partial, stderr));
        }
        catch
        {
            File.Delete(partial);
            throw;
        }
        File.Move(partial, file, overwrite: true);
        stdout.WriteLine($"dump: {records} records of '{root}' (segment {a.Segment}) saved to {file} ({new FileInfo(file).Length} bytes)");
        return MotrCommand.Ok;
    }

    private static async Task<long> SaveAsync(Locality loc, int segment, string root, string path, TextWriter stderr)
    {
        var seg = loc.Segment!;
        if (!seg.TryGetRoot(root, out long off))
            throw new CommandException($"segment {segment} has no root '{root}' (its roots: {Names(seg)})");
        BTree tree;
        try { tree = BTree.Open(seg, off); }
        catch (ArgumentException e) { throw new CommandException($"{e.Message}: dump knows only the bytewise order"); }
        await using var output = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
        return await BTreeDump.SaveAsync(tree, output, new Throttled<long>(n => stderr.WriteLine($"saved {n} records...")));
    }

    public static async Task<int> LoadAsync(MotrCommand.Arguments a, TextWriter stdout, TextWriter stderr)
    {
        string folder = a.Positional[0], file = a.Positional[1], root = a.Positional[2];
        if (!File.Exists(file)) throw new CommandException($"no file {file}");
        await using var engine = await Engine.OpenAsync(MotrCommand.OpenExisting(folder, stderr));
        var loc = LocalityOf(engine, a.Segment);
        long records = await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            if (seg.TryGetRoot(root, out long existing))
                throw new CommandException($"segment {a.Segment}: root '{root}' already names 0x{existing:X}; load under a new name");
            await using var input = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous);
            try
            {
                var tree = await BTreeDump.LoadAsync(input, seg, config: null, root, new Throttled<long>(n => stderr.WriteLine($"loaded {n} records...")));
                return tree.Count;
            }
            catch (ArgumentException e)
            {
                throw new CommandException(e.Message);
            }
        });
        stdout.WriteLine($"load: {records} records from {file} into '{root}' (segment {a.Segment})");
        return MotrCommand.Ok;
    }

    private static Locality LocalityOf(Engine engine, int segment) =>
        segment <= engine.Localities.Count
            ? engine.Localities[segment - 1]
            : throw new CommandException($"the domain has {engine.Localities.Count} segments; there is no segment {segment}");

    private static string Names(Motr.Be.Segments.Segment seg)
    {
        var roots = seg.Roots();
        return roots.Count == 0 ? "none" : string.Join(", ", roots.Select(r => $"'{r.Key}'"));
    }
}
