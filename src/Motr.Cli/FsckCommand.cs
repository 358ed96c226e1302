using System.Buffers.Binary;
using Motr.Be;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Runtime;

namespace Motr.Cli;

/// <summary>
/// <c>motr fsck</c>: every segment's allocator, every b+tree named in its roots (<see cref="BTree.Check"/>), and the
/// ownership of every allocated block (<see cref="SegmentCheck"/>), on the segment's locality.
/// </summary>
/// <remarks>
/// A segment's roots may name structures other than b+trees, whose blocks fsck cannot tell from leaks: when a
/// segment has such a root, allocated blocks no tree owns are listed as unowned but not counted as damage.
/// <para>
/// Read-only unless <c>--recover</c> is given (<see cref="DomainOptions.ReadOnly"/>): the folder is taken shared, the
/// files are opened for reading, and the log is replayed into memory only, so a domain on a read-only file system or
/// snapshot can be checked, and looking changes nothing. The image checked is the one a writing open recovers, so the
/// findings are the same; <c>--recover</c> opens as an engine does and writes recovery's work (placing, checkpoint,
/// a torn tail erased, a damaged header slot rewritten, records discarded by <c>--truncate-at-corruption</c>).
/// </para>
/// </remarks>
internal static class FsckCommand
{
    /// <summary>What one segment's check found, besides <see cref="SegmentCheck"/>'s report.</summary>
    private sealed record SegmentOutcome(SegmentCheckReport Report, List<string> TreeNames, List<string> Damage, List<string> Notes, bool LeaksAreDamage);

    /// <summary>
    /// Checks the domain; <paramref name="cancel"/> (Ctrl-C, SIGTERM) stops the check within a segment's check (between
    /// chunks or nodes), and the domain is closed as after any check (the caller reports the interruption). A long
    /// segment check's progress goes to <paramref name="stderr"/> every two seconds.
    /// </summary>
    public static async Task<int> RunAsync(MotrCommand.Arguments a, TextWriter stdout, TextWriter stderr, CancellationToken cancel = default)
    {
        string folder = a.Positional[0];
        bool recover = a.Flags.Contains(RecoverFlag);
        var options = MotrCommand.OpenExisting(folder, stderr, a.Flags.Contains("--truncate-at-corruption"));
        options.ReadOnly = !recover;
        int damaged = 0;
        long problems = 0;
        Engine opened;
        try
        {
            opened = await Engine.OpenAsync(options, cancel);
        }
        catch (BeCorruptionException e)
        {
            // Damage that keeps the domain from opening is fsck's finding, not a failure to run.
            stdout.WriteLine($"domain {folder}: does not open: {e.Message}");
            // Only for a damaged record with intact ones after it: the option opens nothing else (a log header, a truncated log).
            if (e.TruncationOpens && !a.Flags.Contains("--truncate-at-corruption"))
                stdout.WriteLine(recover
                    ? "  --truncate-at-corruption opens it by discarding the damaged log record and every record after it (those transactions are lost)"
                    : "  --truncate-at-corruption checks it without the damaged log record and every record after it (read-only: the log keeps them; " +
                      "with --recover they are discarded, and those transactions are lost)");
            stdout.WriteLine("fsck: 1 problem (the domain does not open)");
            return MotrCommand.Damage;
        }
        await using (var engine = opened)
        {
            var recovery = engine.Domain.Recovery;
            stdout.WriteLine($"domain {folder}: {engine.Localities.Count} segments; {recovery}");
            if (!recover)
            {
                bool pending = recovery.RecordsReplayed > 0 || recovery.TornTail != null || recovery.Truncated != null || recovery.DamagedHeaderSlot != null;
                stdout.WriteLine("  read-only: nothing was written to the folder" + (pending
                    ? $"; the log was replayed in memory only, and recovery's writes are left to the next open (or fsck {RecoverFlag})" : ""));
            }
            // Damage recovery got past is still damage found: a header slot lost (the log's redundancy with it), or
            // records discarded by --truncate-at-corruption.
            if (recovery.DamagedHeaderSlot is { } slot)
            {
                stdout.WriteLine($"  damage: {BeConstants.LogFileName}: {slot}; the other slot served, and " +
                    (recover ? "recovery rewrote this one from it" : $"the next open (or fsck {RecoverFlag}) rewrites this one from it"));
                problems++;
                damaged++;
            }
            if (recovery.Truncated is { } cut)
            {
                stdout.WriteLine($"  damage: {BeConstants.LogFileName}: {cut}");
                problems++;
                damaged++;
            }
            foreach (var loc in engine.Localities)
            {
                cancel.ThrowIfCancellationRequested();
                var seg = loc.Segment!;
                var progress = new Throttled<CheckProgress>(p => stderr.WriteLine($"fsck: segment {seg.Id}: {p}"));
                var o = await loc.RunAsync(() => Check(seg, cancel, progress));
                long n = Print(o, stdout);
                problems += n;
                if (n > 0) damaged++;
            }
        }
        stdout.WriteLine(damaged == 0 ? "fsck: healthy" : $"fsck: {Count(problems, "problem")} in {Count(damaged, "segment")}");
        return damaged == 0 ? MotrCommand.Ok : MotrCommand.Damage;
    }

    /// <summary>The flag that makes fsck open the domain as an engine does, writing recovery's work into the folder.</summary>
    public const string RecoverFlag = "--recover";

    private static SegmentOutcome Check(Segment seg, CancellationToken cancel, IProgress<CheckProgress> progress)
    {
        var trees = new List<BTree>();
        var names = new List<string>();
        var damage = new List<string>();
        var notes = new List<string>();
        foreach (var (name, off) in seg.Roots())
        {
            string root = $"root '{name}' (0x{off:X})";
            if (off <= 0 || off > seg.Size - sizeof(uint))
            {
                damage.Add($"{root}: outside the segment's {seg.Size} bytes");
                continue;
            }
            uint magic = BinaryPrimitives.ReadUInt32LittleEndian(seg.Bytes(off, sizeof(uint)));
            if (magic != BTreeFormatConstants.TreeMagic)
            {
                bool treeButMagic = BTree.IsTreeHeaderButForMagic(seg, off);
                if (treeButMagic && magic == 0)
                    damage.Add($"{root}: names a destroyed b+tree (its header's magic is zero): the root was not removed with it");
                else if (treeButMagic)
                    damage.Add($"{root}: b+tree header with a damaged magic (0x{magic:X8}; its checksum holds for the tree magic)");
                else
                    notes.Add($"{root}: not a b+tree (magic 0x{magic:X8}); not checked");
                continue;
            }
            if (name == TreeFileCommands.LoadingRoot)
                notes.Add($"{root}: the partial tree of an interrupted `motr load`; the next load removes it");
            try
            {
                trees.Add(BTree.Open(seg, off));
                names.Add(name);
            }
            catch (BeCorruptionException e)
            {
                damage.Add($"{root}: {e.Message}");
            }
            catch (ArgumentException e)
            {
                notes.Add($"{root}: {e.Message}; not checked (fsck knows only the bytewise order)");
            }
        }
        // A damaged tree header leaves that tree's blocks unowned too: leaks are damage only when every root was a checked tree.
        bool leaksAreDamage = notes.Count == 0 && damage.Count == 0;
        return new SegmentOutcome(SegmentCheck.Run(seg, trees, null, cancel, progress), names, damage, notes, leaksAreDamage);
    }

    /// <summary>Prints one segment's outcome; returns how many problems count as damage.</summary>
    private static long Print(SegmentOutcome o, TextWriter stdout)
    {
        var r = o.Report;
        bool Unowned(string problem) => !o.LeaksAreDamage && problem.StartsWith("LEAK", StringComparison.Ordinal);
        long unowned = 0, counted = o.Damage.Count + r.UnlistedProblems;
        foreach (var p in r.Problems)
        {
            if (Unowned(p)) unowned++;
            else counted++;
        }
        stdout.WriteLine($"segment {r.SegmentId} ({r.FileName}): {(counted == 0 ? "healthy" : Count(counted, "problem"))}; " +
            $"{Count(r.Trees.Count, "b+tree")}, {r.Records} records, {r.Nodes} nodes; {r.AllocatedBlocks} blocks allocated ({r.AllocatedBytes} bytes), " +
            $"{r.OwnedBlocks} owned by the trees" + (r.AllocationWalked ? "" : " (the allocator's chunks could not be walked)"));
        for (int i = 0; i < r.Trees.Count; i++)
        {
            var t = r.Trees[i];
            stdout.WriteLine($"  b+tree '{o.TreeNames[i]}' (0x{t.Offset:X}): {(t.Healthy ? "healthy" : Count(t.Problems, "problem"))}, {t.Records} records, " +
                $"{t.Nodes} nodes, height {t.Height}, {t.Blocks} blocks, {t.Bytes} bytes");
        }
        foreach (var n in o.Notes) stdout.WriteLine($"  note: {n}");
        foreach (var d in o.Damage) stdout.WriteLine($"  {d}");
        foreach (var p in r.Problems)
            stdout.WriteLine(Unowned(p) ? $"  unowned (a root not checked may own it): {p}" : $"  {p}");
        if (r.UnlistedProblems > 0) stdout.WriteLine($"  ... and {r.UnlistedProblems} more problems");
        if (unowned > 0) stdout.WriteLine($"  {Count(unowned, "allocated block")} ({r.LeakedBytes} bytes) belonging to no checked tree: owned by the roots not checked, or leaked");
        return counted;
    }

    private static string Count(long n, string noun) => $"{n} {noun}{(n == 1 ? "" : "s")}";
}
