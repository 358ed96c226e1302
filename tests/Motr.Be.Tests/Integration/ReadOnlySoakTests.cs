using System.Buffers.Binary;
using System.Collections.Concurrent;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tests.TestSupport;
using Motr.Runtime;
using Tree = Motr.Be.BTree.BTree;
using Xunit.Abstractions;

namespace Motr.Be.Tests.Integration;

/// <summary>
/// Read-only checks (<see cref="DomainOptions.ReadOnly"/>, what <c>motr fsck</c> does) beside an engine that creates the
/// domain, then opens it, inserts into a b+tree (awaiting some closes, leaving others to its close) and closes it, again
/// and again, on the same folder (two segments, a small log checkpointed often). Every read-only attempt must either be
/// refused cleanly, naming the lock, while the engine holds the folder (or, before its first open created the domain, find
/// none), or open and find a healthy domain holding a prefix of the writer's history that includes everything the writer
/// had acknowledged; the writer is refused only for the folder in use; and at the end no descriptor of this process is
/// open on the folder. Bounded by work (cycles, with hand-offs so that some cycles are always checked), never by time.
/// </summary>
public sealed class ReadOnlySoakTests(ITestOutputHelper output)
{
    private const string Root = "soak";
    private const int Cycles = 24, PerCycle = 16;

    private static byte[] Key(long i)
    {
        var k = new byte[8];
        BinaryPrimitives.WriteInt64BigEndian(k, i);
        return k;
    }

    private static bool InUse(Exception e) =>
        e is BeException && e.Message.Contains("the folder is in use", StringComparison.Ordinal) && e.Message.Contains(BeConstants.LockFileName, StringComparison.Ordinal);

    /// <summary>Before the writer's first open has created the domain (its log's rename commits it).</summary>
    private static bool NoDomain(Exception e) =>
        e.GetType() == typeof(BeException) && e.Message.Contains("no domain here", StringComparison.Ordinal);

    private volatile bool _created;

    /// <summary>Descriptors of this process open on files in <paramref name="dir"/> (Linux).</summary>
    internal static List<string> Descriptors(string dir)
    {
        var open = new List<string>();
        string prefix = Path.GetFullPath(dir) + "/";
        foreach (var fd in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget is { } target && target.StartsWith(prefix, StringComparison.Ordinal)) open.Add(target);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }   // closed meanwhile
        }
        return open;
    }

    [Fact]
    public async Task Read_only_checks_beside_an_engine_restarting_are_refused_cleanly_or_see_a_healthy_acknowledged_prefix()
    {
        if (!OperatingSystem.IsLinux()) return;   // /proc/self/fd
        using var dir = new TempDir();
        var writing = Engines.Options(dir.Path, segments: 2, logSize: 256 << 10);
        writing.CheckpointInterval = TimeSpan.FromMilliseconds(1);
        writing.CheckpointFraction = 0.05;
        long attempted = 0, acknowledged = 0;
        int opens = 0;
        bool checkWanted = false;
        using var checkDone = new SemaphoreSlim(0);
        int writerRefusals = 0, readerRefusals = 0, reads = 0;
        var failures = new ConcurrentQueue<string>();
        var writerDone = new TaskCompletionSource();

        var writer = Task.Run(async () =>
        {
            try
            {
                long next = 0;
                for (int c = 0; c < Cycles; c++)
                {
                    Engine e;
                    while (true)
                    {
                        try
                        {
                            e = await Engines.Open(writing);
                            break;
                        }
                        catch (Exception ex) when (InUse(ex))
                        {
                            writerRefusals++;
                            await Task.Delay(1);
                        }
                    }
                    _created = true;
                    Interlocked.Increment(ref opens);
                    await using (e)
                    {
                        var loc = e.Localities[0];
                        next = await loc.RunAsync(async () =>
                        {
                            var seg = loc.Segment!;
                            Tree tree;
                            if (seg.TryGetRoot(Root, out long off)) tree = Tree.Open(seg, off);
                            else
                            {
                                // The first cycle: the domain was just created (a reader may have been looking for it).
                                using var tx = await seg.BeginAsync(Tree.CreateCredit + Segment.RootCredit);
                                tree = Tree.Create(tx, seg, new BTreeConfig { NodeSize = 512 });
                                seg.SetRoot(tx, Root, tree.Offset);
                                await tx.Close();
                            }
                            long n = next;
                            for (int i = 0; i < PerCycle; i++, n++)
                            {
                                using var tx = await seg.BeginAsync(tree.InsertCredit(8, 8));
                                Volatile.Write(ref attempted, n + 1);
                                Assert.Equal(BTreeStatus.Ok, tree.Insert(tx, Key(n), Key(n * 3)));
                                if (i % 4 != 3) { _ = tx.Close(); continue; }
                                await tx.Close();
                                Volatile.Write(ref acknowledged, n + 1);
                            }
                            return n;
                        });
                    }
                    // Closed. Every other cycle the writer waits for one read-only check, which then must succeed (nothing
                    // holds the folder); in the others it opens again at once, and may meet the reader holding the folder.
                    if (c % 2 == 0)
                    {
                        Volatile.Write(ref checkWanted, true);
                        await checkDone.WaitAsync();
                    }
                }
            }
            catch (Exception ex) { failures.Enqueue($"writer: {ex}"); }
            finally { writerDone.TrySetResult(); }
        });

        // Whether the attempt opened the domain and checked it.
        async Task<bool> ReadOnce()
        {
            bool created = _created;   // read before the open: a refusal for no domain is right only if none had been made
            long before = Volatile.Read(ref acknowledged);
            Engine e;
            try
            {
                e = await Engine.OpenAsync(new DomainOptions { Path = dir.Path, ReadOnly = true, CreateIfMissing = false });
            }
            catch (Exception ex) when (InUse(ex) || (!created && NoDomain(ex)))
            {
                readerRefusals++;
                await Task.Delay(1);
                return false;
            }
            catch (Exception ex)
            {
                failures.Enqueue($"read-only open: {ex}");
                return false;
            }
            try
            {
                await using (e)
                {
                    var loc = e.Localities[0];
                    string? problem = await loc.RunAsync(() =>
                    {
                        var seg = loc.Segment!;
                        if (!seg.TryGetRoot(Root, out long off)) return "root missing";
                        var tree = Tree.Open(seg, off);
                        var report = SegmentCheck.Run(seg, [tree]);
                        if (!report.Healthy) return $"fsck: {string.Join("; ", report.Problems)}";
                        long count = tree.Count, seen = 0;
                        var cursor = tree.OpenCursor();
                        for (bool more = cursor.SeekFirst(); more; more = cursor.MoveNext(), seen++)
                        {
                            if (!cursor.Key.SequenceEqual(Key(seen)) || !cursor.Value.SequenceEqual(Key(seen * 3)))
                                return $"record {seen} is not the writer's {seen}th";
                        }
                        if (seen != count) return $"{seen} records walked, the header counts {count}";
                        long after = Volatile.Read(ref attempted);
                        if (count < before || count > after) return $"{count} records: not between the {before} acknowledged before the open and the {after} attempted after";
                        return null;
                    });
                    if (problem != null) failures.Enqueue($"read-only check: {problem}");
                    else Interlocked.Increment(ref reads);
                }
                return true;
            }
            catch (Exception ex) { failures.Enqueue($"read-only check or close: {ex}"); }
            return false;
        }

        var reader = Task.Run(async () =>
        {
            while (!writerDone.Task.IsCompleted)
            {
                int seen = Volatile.Read(ref opens);
                bool wanted = Volatile.Read(ref checkWanted);
                bool opened = await ReadOnce();
                if (wanted)
                {
                    // The writer closed and waits for this check: nothing held the folder.
                    if (!opened) failures.Enqueue("a read-only check while the writer was closed did not open the domain");
                    Volatile.Write(ref checkWanted, false);
                    checkDone.Release();
                    continue;
                }
                // Checked: wait for the writer's next open, or its next request (back-to-back reads would keep it out).
                if (opened)
                    while (Volatile.Read(ref opens) == seen && !Volatile.Read(ref checkWanted) && !writerDone.Task.IsCompleted) await Task.Delay(1);
            }
        });
        await Task.WhenAll(writer, reader);
        await ReadOnce();   // the writer is done: this one opens, and sees everything
        output.WriteLine($"{reads} read-only checks, {readerRefusals} refused; the writer refused {writerRefusals} times");
        Console.WriteLine($"soak: {reads} read-only checks, {readerRefusals} refused; the writer refused {writerRefusals} times");
        Assert.Empty(failures);
        Assert.True(reads >= Cycles / 2 + 1, $"{reads} read-only checks for {Cycles} cycles");
        Assert.Equal(Cycles * PerCycle, Volatile.Read(ref acknowledged));
        Assert.Empty(Descriptors(dir.Path));
    }
}
