using Motr.Be.BTree;
using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Be.Tests.Recovery;

/// <summary>
/// Recovery stopped part-way, by a cancelled open or by a crash, at every point of a real log's recovery: the open
/// that stops releases every file and the folder, and the next open shows exactly what a recovery that was never
/// interrupted shows.
/// </summary>
public class RecoveryInterruptionTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);
    private static readonly BTreeConfig Small = new() { NodeSize = 512 };

    /// <summary>
    /// A crashed domain of two segments whose log holds a few dozen records not yet checkpointed: b+tree inserts
    /// (out-of-node values, so the segments grow; node checksums left to placing), deletes (blocks freed, their
    /// checksums cancelled), and an insert with a payload, each awaited persistent.
    /// </summary>
    private static async Task<SimStorage> CrashedImage()
    {
        var sim = new SimStorage();
        var e = await Engines.Open(Engines.Sim(sim, segments: 2, segmentSize: 16 << 10));
        await Task.WhenAll(e.Localities.Select(loc => loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            Tree t;
            using (var tx = await seg.BeginAsync(Tree.CreateCredit + Segments.Segment.RootCredit))
            {
                t = Tree.Create(tx, seg, Small);
                seg.SetRoot(tx, "t", t.Offset);
                await tx.Close();
            }
            for (int i = 0; i < 20; i++)
            {
                byte[] k = BitConverter.GetBytes((long)i), v = new byte[600 + 50 * i];
                v.AsSpan().Fill((byte)(i + 1));
                using var tx = await seg.BeginAsync(t.InsertCredit(k.Length, v.Length));
                Assert.Equal(BTreeStatus.Ok, t.Insert(tx, k, v));
                await tx.Close();
            }
            for (int i = 0; i < 20; i += 3)
            {
                using var tx = await seg.BeginAsync(t.DeleteCredit());
                Assert.Equal(BTreeStatus.Ok, t.Delete(tx, BitConverter.GetBytes((long)i)));
                await tx.Close();
            }
            using (var tx = await seg.BeginAsync(t.InsertCredit(8, 8) + new TxCredit(0, 8)))
            {
                Assert.Equal(BTreeStatus.Ok, t.Insert(tx, BitConverter.GetBytes(77L), BitConverter.GetBytes(77L)));
                tx.SetPayload(BitConverter.GetBytes(77L));
                await tx.Close();
            }
        })));
        var crashed = sim.CrashImage(sim.OpCount, CrashVariant.DropUnsynced, 1);
        await e.DisposeAsync();
        // Placing makes a segment's growth durable before it places the header saying so, and nothing placed was
        // synced: cutting each file to its header's size gives the disk of a crash before placing grew the files,
        // so that recovery grows them itself.
        var files = new Dictionary<string, byte[]>();
        foreach (var name in crashed.List())
        {
            var bytes = crashed.ReadAll(name);
            if (name.StartsWith("seg-", StringComparison.Ordinal))
                bytes = bytes[..checked((int)BitConverter.ToInt64(bytes, Segments.SegmentHeader.GeometryOffset))];
            files.Add(name, bytes);
        }
        return SimStorage.FromFiles(files);
    }

    /// <summary>Every segment's bytes, as the open domain holds them.</summary>
    private static List<byte[]> State(Domain d) => d.Segments.Select(s => s.Bytes(0, checked((int)s.Size)).ToArray()).ToList();

    private static void AssertSameState(List<byte[]> expected, Domain d, string when)
    {
        var actual = State(d);
        Assert.True(expected.Count == actual.Count, $"{when}: {actual.Count} segments, expected {expected.Count}");
        for (int i = 0; i < expected.Count; i++)
        {
            if (expected[i].AsSpan().SequenceEqual(actual[i])) continue;
            int at = expected[i].AsSpan().CommonPrefixLength(actual[i]);
            Assert.Fail($"{when}: segment {i + 1} differs from a clean recovery's at offset 0x{at:X} (sizes {actual[i].Length} and {expected[i].Length})");
        }
        foreach (var s in d.Segments)
        {
            var t = Tree.Open(s, s.TryGetRoot("t", out long off) ? off : throw new Xunit.Sdk.XunitException($"{when}: segment {s.Id} lost its tree"));
            Assert.Equal(14, t.Count);
            Assert.True(t.Lookup(BitConverter.GetBytes(77L), out ReadOnlySpan<byte> v) == BTreeStatus.Ok && BitConverter.ToInt64(v) == 77, $"{when}: the last transaction is lost");
        }
    }

    private static DomainOptions Options(IStorage storage)
    {
        var o = Engines.Sim(new SimStorage(), segments: 2, segmentSize: 16 << 10);
        o.Storage = storage;
        o.CreateIfMissing = false;
        return o;
    }

    /// <summary>
    /// What a recovery of <paramref name="image"/> that nothing interrupts leaves, and the storage events (opens, reads,
    /// writes, length changes, syncs) it makes, each as "kind file".
    /// </summary>
    private static async Task<(List<byte[]> State, List<string> Events)> CleanRecovery(SimStorage image)
    {
        var hooks = new HookStorage(image.Clone());
        var events = new List<string>();
        Watch(hooks, e => events.Add(e));
        await using var d = await Domain.OpenAsync(Options(hooks)).WaitAsync(T);
        Watch(hooks, null);
        Assert.True(d.Recovery.RecordsReplayed >= 10, $"the log holds only {d.Recovery.RecordsReplayed} records");
        Assert.Contains("setlength seg-0001.motr", events); // recovery grows a segment file
        var state = State(d);
        AssertSameState(state, d, "a clean recovery");
        return (state, events);
    }

    /// <summary>
    /// Whether event <paramref name="k"/> is inside a run of like events (the same kind on the same file: the regions a
    /// record places in one file, the sectors the search for the log's end reads), which is tried at its two ends only.
    /// </summary>
    private static bool MidRun(List<string> events, int k) =>
        k > 0 && k < events.Count - 1 && events[k - 1] == events[k] && events[k + 1] == events[k];

    /// <summary>Calls <paramref name="onEvent"/> before each open, read, write, length change and sync of <paramref name="hooks"/>' files.</summary>
    private static void Watch(HookStorage hooks, Action<string>? onEvent)
    {
        if (onEvent is null)
        {
            hooks.BeforeOpen = null;
            hooks.BeforeRead = null;
            hooks.Before = null;
            return;
        }
        hooks.BeforeOpen = (name, _) => onEvent("open " + name);
        hooks.BeforeRead = (f, _, _) => onEvent("read " + f.Name);
        hooks.Before = (f, op, _, _) => onEvent(op + " " + f.Name);
    }

    /// <summary>
    /// The token is cancelled from a storage hook, on the open's own thread, just before its k-th storage event, for
    /// every k: while segments load, between and inside records of the replay, while the end of the log is looked for,
    /// and at each sync of the checkpoint that ends recovery. Up to that checkpoint's record in the log header the open
    /// must stop with the task cancelled; from then on (the next open would not replay those records again) it must
    /// return the whole domain. Either way every file is released, and the next open shows a clean recovery's state.
    /// A run of like events is tried at its two ends (<see cref="MidRun"/>).
    /// </summary>
    [Fact]
    public async Task An_open_cancelled_at_any_storage_event_of_recovery_stops_or_completes_whole_and_the_next_open_recovers_it_all()
    {
        var image = await CrashedImage();
        var (expected, events) = await CleanRecovery(image);
        int recorded = events.IndexOf("write motr.log"); // the checkpoint ending recovery: the log's first write
        Assert.True(recorded > 0 && events.IndexOf("flush seg-0001.motr") < recorded);
        for (int k = 0; k < events.Count; k++)
        {
            if (MidRun(events, k)) continue;
            var hooks = new HookStorage(image.Clone());
            using var cts = new CancellationTokenSource();
            int seen = 0;
            var after = new List<string> { events[k] }; // the event the cancel came before, and those after it
            Watch(hooks, e =>
            {
                if (seen++ == k) cts.Cancel();
                else if (seen > k + 1) after.Add(e);
            });
            var open = Domain.OpenAsync(Options(hooks), cts.Token);
            string at = $"cancelled before event {k} ({events[k]}) of {events.Count}";
            try
            {
                await using var d = await open.WaitAsync(T);
                Assert.True(k >= recorded, $"{at}: the open returned a domain, though recovery's checkpoint was not recorded yet");
                AssertSameState(expected, d, $"{at}, the open completed");
            }
            catch (OperationCanceledException)
            {
                Assert.True(k < recorded, $"{at}: the open was cancelled after recovery's checkpoint was recorded");
                Assert.True(open.IsCanceled, $"{at}: the task is {open.Status}, not cancelled");
                // Promptly: no other file is loaded or opened, nor is another synced: a sync after the cancel is the one
                // of the file it came in the middle of (the checkpoint's checksums, the growth of a segment the record
                // being placed grew).
                string file = after[0][(after[0].IndexOf(' ') + 1)..];
                for (int i = 1; i < after.Count; i++)
                {
                    Assert.False(after[i].StartsWith("open ", StringComparison.Ordinal) || (after[i].StartsWith("flush ", StringComparison.Ordinal) && after[i] != "flush " + file
                        && after[i - 1] != "setlength " + after[i][6..]),
                        $"{at}: the open went on to {after[i]} (after: {string.Join(", ", after.Skip(1).Distinct())})");
                }
                // Nor does it go on reading the log: at most the rest of the record it was reading, or the few reads
                // that find the end of the log before the search for a later record begins.
                Assert.True(after.Skip(1).Count(e => e == "read motr.log") <= 3,
                    $"{at}: the open went on to read the log {after.Skip(1).Count(e => e == "read motr.log")} times");
            }
            Assert.True(hooks.OpenFiles == 0, $"{at}: {hooks.OpenFiles} files are left open");
            Watch(hooks, null);
            // The folder was released, and what the stopped recovery wrote changes nothing.
            await using (var d = await Domain.OpenAsync(Options(hooks)).WaitAsync(T))
                AssertSameState(expected, d, $"{at}, reopened");
            Assert.Equal(0, hooks.OpenFiles);
        }
    }

    /// <summary>
    /// An open whose k-th storage event fails with an I/O error, for every k as above: the open fails with that error
    /// (never a domain with part of the log replayed), releases every file and the folder, and the next open shows a
    /// clean recovery's state.
    /// </summary>
    [Fact]
    public async Task An_open_failing_at_any_storage_event_of_recovery_releases_every_file_and_the_next_open_recovers_it_all()
    {
        var image = await CrashedImage();
        var (expected, events) = await CleanRecovery(image);
        for (int k = 0; k < events.Count; k++)
        {
            if (MidRun(events, k)) continue;
            var hooks = new HookStorage(image.Clone());
            int seen = 0;
            Watch(hooks, e => { if (seen++ == k) throw new IOException("injected: " + e); });
            string at = $"failing event {k} ({events[k]}) of {events.Count}";
            var ex = await Assert.ThrowsAnyAsync<Exception>(() => Domain.OpenAsync(Options(hooks)).WaitAsync(T));
            Assert.True(ex is IOException && ex.Message.StartsWith("injected", StringComparison.Ordinal), $"{at}: the open failed with {ex}");
            Assert.True(hooks.OpenFiles == 0, $"{at}: {hooks.OpenFiles} files are left open");
            Watch(hooks, null);
            await using (var d = await Domain.OpenAsync(Options(hooks)).WaitAsync(T))
                AssertSameState(expected, d, $"{at}, reopened");
            Assert.Equal(0, hooks.OpenFiles);
        }
    }

    /// <summary>
    /// Creating a domain writes every segment file and zeroes the whole log before renaming it into place. An open
    /// cancelled before any storage event of that creation stops promptly (no further file is created, the log is not
    /// zeroed to its end), leaves no file open and the folder empty, and the next open makes the whole domain there.
    /// </summary>
    [Fact]
    public async Task An_open_cancelled_while_it_creates_the_domain_stops_promptly_and_the_next_open_creates_it()
    {
        static DomainOptions New(IStorage storage)
        {
            var o = Engines.Sim(new SimStorage(), segments: 3, logSize: 4 << 20);
            o.Storage = storage;
            return o;
        }
        var events = new List<string>();
        var clean = new HookStorage(new SimStorage());
        Watch(clean, e => events.Add(e));
        await (await Domain.OpenAsync(New(clean)).WaitAsync(T)).DisposeAsync();
        int created = events.IndexOf("open motr.log"); // the log renamed into place: the domain exists
        Assert.True(created > 0 && events.Take(created).Count(e => e == "write motr.log.new") >= 4);
        for (int k = 0; k < created; k++)
        {
            var hooks = new HookStorage(new SimStorage());
            using var cts = new CancellationTokenSource();
            int seen = 0;
            var after = new List<string>();
            Watch(hooks, e =>
            {
                if (seen++ == k) cts.Cancel();
                else if (seen > k + 1) after.Add(e);
            });
            string at = $"cancelled before event {k} ({events[k]}) of the creation";
            var open = Domain.OpenAsync(New(hooks), cts.Token);
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => open.WaitAsync(T));
            Assert.True(open.IsCanceled, $"{at}: the task is {open.Status}");
            Assert.True(hooks.OpenFiles == 0, $"{at}: {hooks.OpenFiles} files are left open");
            // Files are made under a temporary name (the cleanup only opens the ones it checks before removing them).
            Assert.True(!after.Any(e => e.StartsWith("open ", StringComparison.Ordinal) && e.EndsWith(".new", StringComparison.Ordinal))
                && after.Count(e => e == "write motr.log.new") <= 3, // the MiB being zeroed, the two header slots
                $"{at}: the open went on to {string.Join(", ", after.Distinct())}");
            Assert.True(hooks.Inner.List().Count == 0, $"{at}: the cancelled creation left {string.Join(", ", hooks.Inner.List())}");
            Watch(hooks, null);
            await using var d = await Domain.OpenAsync(New(hooks)).WaitAsync(T);
            Assert.Equal(3, d.Segments.Count);
            Assert.True(d.Recovery.Created, $"{at}: the next open found a domain ({d.Recovery})");
        }
    }

    /// <summary>
    /// A power cut at any device operation of a real recovery (a run of like operations tried at its two ends), with
    /// the operations not yet synced dropped, kept, or the last one of each file torn, in turn: the next open recovers
    /// exactly a clean recovery's segments, whether the cut came during the replay, the checkpoint's syncs, or after
    /// its record.
    /// </summary>
    [Fact]
    public async Task A_recovery_cut_by_a_crash_at_any_operation_is_run_again_to_the_same_state()
    {
        var image = await CrashedImage();
        var (expected, _) = await CleanRecovery(image);
        var run = image.Clone();
        await (await Domain.OpenAsync(Options(run)).WaitAsync(T)).DisposeAsync();
        var ops = Enumerable.Range(0, run.OpCount).Select(i => run.GetOp(i)).Select(op => $"{op.Kind} {op.File}").ToList();
        var variants = new[] { CrashVariant.DropUnsynced, CrashVariant.KeepUnsynced, CrashVariant.TornLast };
        int tried = 0;
        for (int k = 0; k <= ops.Count; k++)
        {
            if (k < ops.Count && MidRun(ops, k)) continue;
            var variant = variants[tried++ % variants.Length];
            var crashed = run.CrashImage(k, variant, k);
            await using var d = await Domain.OpenAsync(Options(crashed)).WaitAsync(T);
            AssertSameState(expected, d, $"crashed after {k} of the recovery's {ops.Count} operations ({variant})");
        }
    }

    /// <summary>
    /// While one open recovers, a second open of the folder is refused (two recoveries would replay and write the
    /// same log); once the first is cancelled, the folder is free and a third open recovers everything.
    /// </summary>
    [Fact]
    public async Task A_second_open_during_a_recovery_is_refused_and_the_folder_is_free_once_the_first_is_cancelled()
    {
        var image = await CrashedImage();
        var (expected, _) = await CleanRecovery(image);
        var hooks = new HookStorage(image.Clone());
        using var gate = new ManualResetEventSlim();
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        hooks.Before = (f, op, _, _) =>
        {
            if (op != "write" || !f.Name.StartsWith("seg-", StringComparison.Ordinal) || held.Task.IsCompleted) return;
            held.TrySetResult();
            gate.Wait(T); // the first open, held in its replay
        };
        using var cts = new CancellationTokenSource();
        var first = Domain.OpenAsync(Options(hooks), cts.Token);
        await held.Task.WaitAsync(T);
        var refused = await Assert.ThrowsAsync<BeException>(() => Domain.OpenAsync(Options(hooks)).WaitAsync(T));
        Assert.Contains("in use", refused.Message);
        cts.Cancel();
        gate.Set();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first.WaitAsync(T));
        Assert.True(first.IsCanceled);
        Assert.Equal(0, hooks.OpenFiles);
        hooks.Before = null;
        await using var d = await Domain.OpenAsync(Options(hooks)).WaitAsync(T);
        AssertSameState(expected, d, "the third open");
    }

    /// <summary>An open with a token cancelled already touches nothing: no file is opened, no folder made, nothing locked.</summary>
    [Fact]
    public async Task An_open_with_a_cancelled_token_touches_no_file()
    {
        var hooks = new HookStorage(new SimStorage());
        var events = new List<string>();
        Watch(hooks, e => events.Add(e));
        var cancelled = new CancellationToken(true);
        var o = Engines.Sim(new SimStorage());
        o.Storage = hooks;
        Assert.True((await Record.ExceptionAsync(() => Domain.OpenAsync(o, cancelled).WaitAsync(T))) is OperationCanceledException);
        Assert.True((await Record.ExceptionAsync(() => Engine.OpenAsync(o, cancelled).WaitAsync(T))) is OperationCanceledException);
        Assert.Empty(events);
        Assert.Empty(hooks.Inner.List());
        hooks.Inner.Lock().Dispose(); // not taken

        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "never");
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Engine.OpenAsync(Engines.Options(path), cancelled).WaitAsync(T));
        Assert.False(Directory.Exists(path));
    }
}
