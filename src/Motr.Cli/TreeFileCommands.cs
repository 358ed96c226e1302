using Motr.Be;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Storage;
using Motr.Runtime;

namespace Motr.Cli;

/// <summary>
/// <c>motr dump</c> and <c>motr load</c>: a named b+tree to and from a <see cref="BTreeDump"/> file. Dump opens the domain
/// read-only (<see cref="DomainOptions.ReadOnly"/>: nothing written to the folder); load opens it as an engine does.
/// </summary>
internal static class TreeFileCommands
{
    /// <summary>
    /// The root a load keeps its tree under until it is complete, then renamed to the name asked for in one
    /// transaction: an interrupted load never leaves a partial tree under that name, and the next load removes it.
    /// </summary>
    internal const string LoadingRoot = "motr-load-in-progress";

    public static async Task<int> DumpAsync(MotrCommand.Arguments a, TextWriter stdout, TextWriter stderr, CancellationToken cancel)
    {
        string folder = a.Positional[0], root = a.Positional[1], file = a.Positional[2];
        CheckDumpTarget(folder, file, a.Flags.Contains("--force"));
        // Read-only (DomainOptions.ReadOnly): a dump only reads, so it must not place and checkpoint the replayed log
        // into the folder as a side effect, and must work on a read-only copy or snapshot and beside a read-only fsck.
        // The tree saved is the one a writing open recovers (the log replayed in memory).
        var options = MotrCommand.OpenExisting(folder, stderr);
        options.ReadOnly = true;
        await using var engine = await Engine.OpenAsync(options);
        var loc = LocalityOf(engine, a.Segment);
        // A new file beside the target, renamed over it once complete and synced: an interrupted dump leaves no half
        // file under the name.
        string partial = file + ".partial";
        long records;
        try
        {
            records = await loc.RunAsync(() => SaveAsync(loc, a.Segment, root, partial, stderr, cancel));
            // The rename made durable too (its folder synced, as the engine's own renames are): "saved" must survive a
            // power failure, or the dump's name could be lost after the command said it was written.
            string full = Path.GetFullPath(file);
            new FileStorage(Path.GetDirectoryName(full)!).Rename(Path.GetFileName(partial), Path.GetFileName(full));
        }
        catch
        {
            try { File.Delete(partial); } catch (Exception) { /* the original error says more */ }
            throw;
        }
        stdout.WriteLine($"dump: {records} records of '{root}' (segment {a.Segment}) saved to {file} ({new FileInfo(file).Length} bytes)");
        return MotrCommand.Ok;
    }

    /// <summary>
    /// Refuses, before the domain is opened, a target in the domain's folder or in any folder holding a domain's log or
    /// lock file (the domain's by another path, or another domain's), a folder, a missing folder, a symbolic link, a device
    /// node, a FIFO or a socket (even with --force: the rename would replace it), or (without --force) an existing file.
    /// </summary>
    private static void CheckDumpTarget(string folder, string file, bool force)
    {
        string full = Path.GetFullPath(file);
        string? dir = Path.GetDirectoryName(full);
        if (dir is null || !Directory.Exists(dir)) throw new CommandException($"no folder {dir ?? file} to write the dump into");
        if (Directory.Exists(full)) throw new CommandException($"{file} is a folder; give a file name for the dump");
        if (string.Equals(dir.TrimEnd(Path.DirectorySeparatorChar), Path.GetFullPath(folder).TrimEnd(Path.DirectorySeparatorChar), StringComparison.Ordinal))
            throw new CommandException($"{file} is inside the domain folder {folder}: write the dump elsewhere");
        // The same folder by another path (a symlink, a bind mount) or another domain's folder: its files are an
        // engine's, and a dump renamed over one of them (a segment, the log) destroys that domain. A folder that holds a
        // log or a lock file is a domain folder, whatever path names it.
        foreach (string own in new[] { BeConstants.LogFileName, BeConstants.LockFileName })
            if (File.Exists(Path.Combine(dir, own)))
                throw new CommandException($"{file} is in a domain folder ({dir} holds {own}): write the dump elsewhere");
        // The dump is renamed over its target, which replaces a symbolic link itself, never what it points to: /dev/stdout
        // or a shell's >(...) (/dev/fd/N) would be replaced by a file (as root, /dev/stdout for the whole system), or the
        // dump fail with a misleading "could not find /dev/fd/63.partial". Refused even with --force.
        if (new FileInfo(full).LinkTarget is { } link)
            throw new CommandException($"{file} is a symbolic link (to {link}); a dump is written beside its target and renamed over it, " +
                "which would replace the link, not write to what it names: give the path of a file");
        // Never over anything already there unless asked, and never over what is not a regular file: the rename would
        // replace a device node (as root, /dev/null for the whole system) or a FIFO another program reads.
        if (!File.Exists(full)) return;
        if (FileKind.NotRegular(full) is { } kind)
            throw new CommandException($"{file} is {kind}, not a file; a dump is renamed over its target, which would replace it: give the path of a file");
        if (!force) throw new CommandException($"{file} exists; --force replaces it");
    }

    private static async Task<long> SaveAsync(Locality loc, int segment, string root, string path, TextWriter stderr, CancellationToken cancel)
    {
        var seg = loc.Segment!;
        if (!seg.TryGetRoot(root, out long off))
            throw new CommandException($"segment {segment} has no root '{root}' (its roots: {Names(seg)})");
        BTree tree;
        try { tree = BTree.Open(seg, off); }
        catch (ArgumentException e) { throw new CommandException($"{e.Message}: dump knows only the bytewise order"); }
        await using var output = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
        long records = await BTreeDump.SaveAsync(tree, output, new Throttled<long>(n => stderr.WriteLine($"saved {n} records...")), cancel);
        output.Flush(flushToDisk: true); // durable before it is renamed to the name asked for
        return records;
    }

    public static async Task<int> LoadAsync(MotrCommand.Arguments a, TextWriter stdout, TextWriter stderr, CancellationToken cancel)
    {
        string folder = a.Positional[0], file = a.Positional[1], root = a.Positional[2];
        if (!File.Exists(file)) throw new CommandException($"no file {file}");
        if (root == LoadingRoot) throw new CommandException($"'{LoadingRoot}' is the name a load uses while it runs; choose another");
        await using var engine = await Engine.OpenAsync(MotrCommand.OpenExisting(folder, stderr));
        var loc = LocalityOf(engine, a.Segment);
        long records = await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            if (seg.TryGetRoot(root, out long existing))
                throw new CommandException($"segment {a.Segment}: root '{root}' already names 0x{existing:X}; load under a new name");
            if (seg.TryGetRoot(LoadingRoot, out long stale)) await RemoveInterruptedLoadAsync(seg, stale, stderr, cancel);
            await using var input = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous);
            BTree tree;
            try
            {
                tree = await BTreeDump.LoadAsync(input, seg, config: null, LoadingRoot, new Throttled<long>(n => stderr.WriteLine($"loaded {n} records...")), cancel);
            }
            catch (ArgumentException e)
            {
                throw new CommandException(e.Message);
            }
            catch (Exception e) when (e.Data["Motr.BTreeDump.Cleanup"] is Exception cleanup)
            {
                throw new CommandException($"{e.Message}; and the partial tree could not be removed ({cleanup.Message}): it stays under root " +
                    $"'{LoadingRoot}', which the next load removes");
            }
            // Complete: under the name asked for, in one transaction (the working name's slot freed first, so a segment
            // with one free slot takes the load too).
            try
            {
                using var tx = await seg.BeginAsync(Segment.RootCredit * 2);
                seg.RemoveRoot(tx, LoadingRoot);
                seg.SetRoot(tx, root, tree.Offset);
                await tx.Close();
            }
            catch (Exception e) when (e is BeException or IOException)
            {
                throw new CommandException($"the tree was loaded but could not be named '{root}' ({e.Message}); it stays under root " +
                    $"'{LoadingRoot}', which the next load removes");
            }
            return tree.Count;
        });
        stdout.WriteLine($"load: {records} records from {file} into '{root}' (segment {a.Segment})");
        return MotrCommand.Ok;
    }

    /// <summary>
    /// Deletes the partial tree an interrupted load left under <see cref="LoadingRoot"/>, and the root. A tree too
    /// damaged to open or empty loses only its name (its blocks are then what fsck reports as leaked), so it never
    /// blocks later loads.
    /// </summary>
    private static async Task RemoveInterruptedLoadAsync(Segment seg, long offset, TextWriter stderr, CancellationToken cancel)
    {
        BTree? tree = null;
        try
        {
            tree = BTree.Open(seg, offset);
            stderr.WriteLine($"removing the partial tree an interrupted load left ({tree.Count} records, root '{LoadingRoot}')...");
            await tree.DeleteAllAsync(progress: new Throttled<long>(n => stderr.WriteLine($"removed {n} records...")), cancellationToken: cancel);
        }
        catch (BeCorruptionException e)
        {
            stderr.WriteLine($"warning: the partial tree an interrupted load left is damaged ({e.Message}); only its name '{LoadingRoot}' is " +
                "removed, and fsck will list its blocks as leaked");
            tree = null;
        }
        catch (OperationCanceledException e) when (cancel.IsCancellationRequested)
        {
            // What DeleteAllAsync has not removed yet stays named: the usual "no partial tree is left" would be untrue.
            throw new CommandInterruptedException("interrupted while removing the partial tree an interrupted load left; what remains of it " +
                $"stays under root '{LoadingRoot}', which the next load removes", e);
        }
        using var tx = await seg.BeginAsync(BTree.DestroyCredit + Segment.RootCredit);
        tree?.Destroy(tx);
        seg.RemoveRoot(tx, LoadingRoot);
        await tx.Close();
    }

    private static Locality LocalityOf(Engine engine, int segment) =>
        segment <= engine.Localities.Count
            ? engine.Localities[segment - 1]
            : throw new CommandException($"the domain has {engine.Localities.Count} segments; there is no segment {segment}");

    private static string Names(Segment seg)
    {
        var roots = seg.Roots();
        return roots.Count == 0 ? "none" : string.Join(", ", roots.Select(r => $"'{r.Key}'"));
    }
}
