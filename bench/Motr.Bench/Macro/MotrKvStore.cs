using System.Buffers.Binary;
using System.Diagnostics;
using Motr.Be;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Bench.Macro;

/// <summary>
/// motr's b+tree under the btree bench: an engine with one segment per locality and, on each locality,
/// a tree of fixed 16-byte keys and 100-byte values; a key belongs to the locality
/// <see cref="KeySet.PartOf"/> names. Inserts and deletes: <c>writers</c> async loops per locality, each
/// taking the next key of its locality, one transaction per operation, awaiting its persistence
/// (durable) before the next. Lookups and scans: one synchronous loop per locality, yielding every
/// <see cref="Chunk"/> keys. The localities run their shares concurrently.
/// </summary>
internal sealed class MotrKvStore : KvStore
{
    /// <summary>Lookups between two yields of a locality's loop.</summary>
    private const int Chunk = 10_000;

    private readonly string _system;
    private readonly Engine _engine;
    private readonly bool _ownsEngine;
    private readonly int _writersPerLocality;
    private readonly BTree[] _trees;
    private readonly DomainOptions _options;
    private KeySet? _prepared;
    private KeySet[] _parts = [];

    // The engine's error counters when it opened: a window after which any has moved fails the run (CheckHealth).
    private readonly long _faults0, _violations0;

    private MotrKvStore(string system, Engine engine, bool ownsEngine, int writersPerLocality, BTree[] trees, DomainOptions options)
    {
        _system = system;
        _engine = engine;
        _ownsEngine = ownsEngine;
        _writersPerLocality = writersPerLocality;
        _trees = trees;
        _options = options;
        _faults0 = engine.Localities.Sum(l => l.Faults);
        _violations0 = engine.Domain.InvariantViolations;
    }

    /// <summary>
    /// Fails the run if the engine reported an error no operation returned: an exception that escaped a turn on a
    /// locality (the engine only prints it), a transaction left open across a turn and aborted by the engine, a
    /// failed log or placer. Called after every window, outside it.
    /// </summary>
    private void CheckHealth(string when)
    {
        if (_engine.Domain.Failure is { } failure)
            throw new InvalidOperationException($"{_system}: {when}: the domain failed: {failure.Message}", failure);
        long faults = Localities.Sum(l => l.Faults) - _faults0;
        if (faults != 0)
            throw new InvalidOperationException($"{_system}: {when}: {faults:N0} exceptions escaped turns on the localities (printed above as 'unhandled exception in a turn')");
        long violations = _engine.Domain.InvariantViolations - _violations0;
        if (violations != 0)
            throw new InvalidOperationException($"{_system}: {when}: the engine aborted {violations:N0} transactions left open across a turn");
    }

    public override string System => _system;

    private IReadOnlyList<Locality> Localities => _engine.Localities;

    public override int Writers(string workload) =>
        workload is BTreeBench.Insert or BTreeBench.Delete ? _writersPerLocality * Localities.Count : Localities.Count;

    /// <summary>Opens a new engine in <paramref name="folder"/> with <paramref name="localities"/> segments sized for <paramref name="keys"/> keys, and a tree on each.</summary>
    public static async Task<MotrKvStore> OpenAsync(string system, int localities, string folder, int keys, int writersPerLocality, BenchOptions o)
    {
        long segmentSize = SegmentSizeFor(keys, localities);
        var options = new DomainOptions
        {
            Path = folder,
            Segments = localities,
            SegmentSize = segmentSize,
            SegmentMaxSize = Math.Max(segmentSize * 8, 4L << 30),
            LogSize = (long)o.LogMiB << 20,
            CheckpointFraction = o.CheckpointFraction ?? new DomainOptions().CheckpointFraction,
            OnWarning = m => Console.Error.WriteLine($"motr: {m}"),
        };
        var engine = await Engine.OpenAsync(options);
        try
        {
            var trees = await CreateTreesAsync(engine, "bench");
            return new MotrKvStore(system, engine, ownsEngine: true, writersPerLocality, trees, options);
        }
        catch
        {
            await engine.DisposeAsync();
            throw;
        }
    }

    /// <summary>A segment for 1M keys on one locality: 512 MiB (about 4x the records' bytes; only what is touched is memory), at least 64 MiB.</summary>
    private static long SegmentSizeFor(int keys, int localities)
    {
        long want = (long)keys * 512 / localities;
        long size = 64L << 20;
        while (size < want) size *= 2;
        return size;
    }

    private static async Task<BTree[]> CreateTreesAsync(Engine engine, string root)
    {
        var trees = new BTree[engine.Localities.Count];
        for (int i = 0; i < trees.Length; i++)
        {
            var loc = engine.Localities[i];
            trees[i] = await loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                var tx = await seg.BeginAsync(BTree.CreateCredit + Segment.RootCredit);
                TxPersistence persisted;
                long offset;
                try
                {
                    var tree = BTree.Create(tx, seg, new BTreeConfig { KeySize = KeyStream.KeySize, ValueSize = BTreeValues.ValueSize });
                    offset = tree.Offset;
                    seg.SetRoot(tx, root, offset);
                    persisted = tx.Close();
                }
                finally
                {
                    tx.Dispose();
                }
                await persisted;
                return BTree.Open(seg, offset);
            });
        }
        return trees;
    }

    public override async Task<KvStore> OpenWarmUpAsync(string folder) =>
        new MotrKvStore(_system, _engine, ownsEngine: false, _writersPerLocality, await CreateTreesAsync(_engine, "warm"), _options);

    public override void Prepare(KeySet keys)
    {
        if (ReferenceEquals(keys, _prepared)) return;
        _parts = keys.Split(Localities.Count);
        _prepared = keys;
    }

    private KeySet[] Parts(KeySet keys)
    {
        Prepare(keys);
        return _parts;
    }

    public override Task<long?> LoopAllocatedAsync() => LocalityAllocatedAsync(_engine);

    private static async Task<long?> LocalityAllocatedAsync(Engine engine)
    {
        long sum = 0;
        foreach (var l in engine.Localities) sum += await l.RunAsync(GC.GetAllocatedBytesForCurrentThread);
        return sum;
    }

    // ---- inserts and deletes: many writers per locality, one durable transaction per op

    /// <summary>One locality's share of a write workload; touched only by that locality's thread.</summary>
    private sealed class WriteShare(KeyStream keys)
    {
        public readonly KeyStream Keys = keys;
        public readonly LatencyHistogram Latency = new();
        public int Next;
        public long Done, Failed, Retried;
        public BTreeStatus FirstFailure;
    }

    public override Task<PhaseRun> InsertAsync(KeySet keys) => WriteAsync(keys, insert: true);

    public override Task<PhaseRun> DeleteAsync(KeySet keys) => WriteAsync(keys, insert: false);

    private async Task<PhaseRun> WriteAsync(KeySet keys, bool insert)
    {
        var parts = Parts(keys);
        var shares = parts.Select(p => new WriteShare(insert ? p.Insert : p.Delete)).ToArray();
        var stats0 = _engine.Domain.Stats;
        var tree0 = _trees.Select(t => t.Stats).ToArray();
        long waits0 = Localities.Sum(l => l.Segment!.TxStats.SpaceWaits);
        long start = Stopwatch.GetTimestamp();
        await Task.WhenAll(Localities.Select((l, i) => l.RunAsync(() => StartWriters(l.Segment!, _trees[i], shares[i], insert))));
        long end = Stopwatch.GetTimestamp();
        var stats1 = _engine.Domain.Stats;
        var tree1 = await Task.WhenAll(Localities.Select((l, i) => l.RunAsync(() => _trees[i].Stats)));
        long spaceWaits = Localities.Sum(l => l.Segment!.TxStats.SpaceWaits) - waits0;

        var run = new PhaseRun { Ticks = end - start, LatencyWhat = "BeginAsync -> persisted, every op (each op its own durable transaction)" };
        foreach (var s in shares)
        {
            run.Latency.Add(s.Latency);
            run.Ops += s.Done;
        }
        long failed = shares.Sum(s => s.Failed);
        if (failed > 0)
            throw new InvalidOperationException($"{_system}: {failed:N0} {(insert ? "inserts" : "deletes")} failed (first: {shares.First(s => s.Failed > 0).FirstFailure})");
        if (run.Ops != keys.Count)
            throw new InvalidOperationException($"{_system}: {run.Ops:N0} {(insert ? "inserts" : "deletes")} done, expected {keys.Count:N0}");
        AddLogCounters(run, stats0, stats1);
        long retried = shares.Sum(s => s.Retried);
        run.Notes.Add($"trees: {string.Join("; ", tree1.Select((t, i) => $"height {t.Height}, {t.Nodes:N0} nodes, {t.Records:N0} records, " +
            $"{t.Splits - tree0[i].Splits:N0} splits, {t.Merges - tree0[i].Merges:N0} merges, {t.Rebalances - tree0[i].Rebalances:N0} rebalances"))}" +
            (retried > 0 ? $"; {retried:N0} txs begun again (the tree grew while waiting to begin: credit short)" : "") +
            $"; {spaceWaits:N0} begins waited for log space");
        return run;
    }

    private Task StartWriters(Segment segment, BTree tree, WriteShare share, bool insert)
    {
        var loops = new Task[_writersPerLocality];
        for (int i = 0; i < loops.Length; i++) loops[i] = WriterAsync(segment, tree, share, insert);
        return Task.WhenAll(loops);
    }

    private static async Task WriterAsync(Segment segment, BTree tree, WriteShare share, bool insert)
    {
        var value = new byte[BTreeValues.ValueSize];
        // One clock read per operation: the one ending an operation begins the next (as the peers' loops do).
        long t0 = Stopwatch.GetTimestamp();
        while (share.Next < share.Keys.Count)
        {
            int i = share.Next++;
            TxPersistence persisted;
            while (true)
            {
                // The credit depends on the tree's height: compute it in the turn of the operation, and begin
                // again if the transaction had to wait for log space and the tree grew meanwhile.
                int height = tree.Height;
                var tx = await segment.BeginAsync(insert ? tree.InsertCredit(KeyStream.KeySize, BTreeValues.ValueSize) : tree.DeleteCredit());
                try
                {
                    if (tree.Height != height)
                    {
                        share.Retried++;
                        continue;
                    }
                    var st = Apply(tree, tx, share.Keys, i, value, insert);
                    if (st != BTreeStatus.Ok && share.Failed++ == 0) share.FirstFailure = st;
                    persisted = tx.Close();
                    break;
                }
                finally
                {
                    tx.Dispose();
                }
            }
            await persisted;
            long now = Stopwatch.GetTimestamp();
            share.Latency.Record(now - t0);
            share.Done++;
            t0 = now;
        }
    }

    private static BTreeStatus Apply(BTree tree, Transaction tx, KeyStream keys, int i, byte[] value, bool insert)
    {
        var key = keys.Key(i);
        if (!insert) return tree.Delete(tx, key);
        BTreeValues.Fill(key, value);
        return tree.Insert(tx, key, value);
    }

    private static void AddLogCounters(PhaseRun run, DomainStats a, DomainStats b)
    {
        double secs = run.Seconds;
        long ops = Math.Max(1, run.Ops);
        long records = b.Log.Records - a.Log.Records, syncs = b.Log.Syncs - a.Log.Syncs;
        long checkpoints = b.Placing.Checkpoints - a.Placing.Checkpoints;
        run.LogBytesPerOp = (b.Log.Bytes - a.Log.Bytes) / (double)ops;
        run.FsyncsPerSec = syncs / secs;
        run.OpsPerRecord = records > 0 ? (double)run.Ops / records : double.NaN;
        run.Extra["checkpoints"] = checkpoints;
        run.Extra["placed_mib_per_sec"] = (b.Placing.Bytes - a.Placing.Bytes) / secs / (1 << 20);
        run.Extra["placed_regions_per_op"] = (b.Placing.Regions - a.Placing.Regions) / (double)ops;
        // What the checkpoints cost the device, beside the log: their page writes, and the share of the window
        // they ran in (the log's syncs then share the device with them).
        double checkpointShare = (b.Placing.CheckpointTime - a.Placing.CheckpointTime).TotalSeconds / secs;
        double writtenBackPerOp = (b.Placing.WrittenBack - a.Placing.WrittenBack) / (double)ops;
        run.Extra["checkpoint_share"] = checkpointShare;
        run.Extra["written_back_bytes_per_op"] = writtenBackPerOp;
        double syncSecs = (b.Log.SyncTime - a.Log.SyncTime).TotalSeconds;
        long groups = b.Log.Groups - a.Log.Groups;
        run.Notes.Add($"log: {run.LogBytesPerOp:N0} B/op, {records / secs:N0} records/s ({(records > 0 ? (double)groups / records : 0):F2} groups each), {syncs / secs:N0} fdatasync/s " +
            $"(avg {(syncs > 0 ? syncSecs * 1e6 / syncs : 0):N1} us, {syncSecs / secs:P0} of the window); placing {(b.Placing.Bytes - a.Placing.Bytes) / secs / (1 << 20):N1} MiB/s " +
            $"({(b.Placing.Regions - a.Placing.Regions) / (double)ops:N2} regions/op), " +
            $"{checkpoints} checkpoints in the window (running {checkpointShare:P0} of it, segment pages written back {writtenBackPerOp:N0} B/op); log used at end {b.LogUsed / (double)(1 << 20):N1} of {b.LogAreaSize / (double)(1 << 20):N0} MiB");
    }

    // ---- lookups: one synchronous loop per locality

    private sealed class ReadShare(BTree tree, KeyStream keys)
    {
        public readonly BTree Tree = tree;
        public readonly KeyStream Keys = keys;
        public readonly LatencyHistogram Latency = new();
        public readonly byte[] Scratch = new byte[BTreeValues.ValueSize];
        public long Missing, Wrong, Ticks, Records, OutOfOrder, Measured, ShortPasses;
        public int Passes;
        public ulong Sink;
    }

    public override async Task<PhaseRun> LookupAsync(KeySet keys)
    {
        var parts = Parts(keys);
        var shares = parts.Select((p, i) => new ReadShare(_trees[i], p.Lookup)).ToArray();
        long start = Stopwatch.GetTimestamp();
        await Task.WhenAll(Localities.Select((l, i) => l.RunAsync(() => LookupLoopAsync(shares[i]))));
        long end = Stopwatch.GetTimestamp();
        var run = new PhaseRun { Ticks = end - start, LatencyWhat = $"one Lookup, every {LookupSampleEvery}th op; synchronous on the locality, a yield every {Chunk:N0}" };
        foreach (var s in shares)
        {
            run.Latency.Add(s.Latency);
            run.Ops += s.Keys.Count;
            Sink ^= s.Sink;
        }
        long missing = shares.Sum(s => s.Missing), wrong = shares.Sum(s => s.Wrong);
        if (missing + wrong > 0) throw new InvalidOperationException($"{_system}: lookups found {missing:N0} keys missing and {wrong:N0} wrong values");
        foreach (var s in shares) CheckLookupSink(_system, s.Keys, s.Sink);
        if (shares.Length > 1)
            run.Notes.Add("per locality: " + string.Join(", ", shares.Select(s => $"{s.Keys.Count:N0} keys in {s.Ticks / (double)Stopwatch.Frequency:F3} s")));
        return run;
    }

    private static async Task LookupLoopAsync(ReadShare s)
    {
        long start = Stopwatch.GetTimestamp();
        for (int from = 0; from < s.Keys.Count; from += Chunk)
        {
            LookupChunk(s, from, Math.Min(s.Keys.Count, from + Chunk));
            await Task.Yield();
        }
        s.Ticks = Stopwatch.GetTimestamp() - start;
    }

    private static void LookupChunk(ReadShare s, int from, int to)
    {
        var tree = s.Tree;
        ulong sink = 0;
        for (int i = from; i < to; i++)
        {
            var key = s.Keys.Key(i);
            BTreeStatus st;
            ReadOnlySpan<byte> value;
            if (i % LookupSampleEvery == 0)
            {
                long t0 = Stopwatch.GetTimestamp();
                st = tree.Lookup(key, out value);
                s.Latency.Record(Stopwatch.GetTimestamp() - t0);
                if (st == BTreeStatus.Ok && !BTreeValues.Matches(key, value, s.Scratch)) s.Wrong++;
            }
            else st = tree.Lookup(key, out value);
            if (st == BTreeStatus.Ok) sink ^= value[0];
            else s.Missing++;
        }
        s.Sink ^= sink;
    }

    // ---- scans: one cursor per locality

    public override async Task<PhaseRun> ScanAsync(KeySet keys, TimeSpan atLeast)
    {
        var parts = Parts(keys);
        var shares = parts.Select((p, i) => new ReadShare(_trees[i], p.Lookup)).ToArray();
        long limit = (long)(atLeast.TotalSeconds * Stopwatch.Frequency);
        // Every locality's verifying pass first, then the measured passes of all from one start: the window is the
        // same for every locality (a locality did not start measuring while another was still verifying) and is
        // the wall time from that start to the last locality's end, as for the lookups.
        await Task.WhenAll(Localities.Select((l, i) => l.RunAsync(() => VerifyScan(shares[i]))));
        long start = Stopwatch.GetTimestamp();
        await Task.WhenAll(Localities.Select((l, i) => l.RunAsync(() => ScanLoop(shares[i], limit))));
        var run = new PhaseRun { Ticks = Stopwatch.GetTimestamp() - start };
        foreach (var s in shares)
        {
            CheckScan(_system, s.Records, s.Keys.Count, s.OutOfOrder, s.Wrong);
            if (s.ShortPasses != 0) throw new InvalidOperationException($"{_system}: {s.ShortPasses} measured scan passes did not see {s.Keys.Count:N0} records");
            run.Ops += s.Measured;
            Sink ^= s.Sink;
        }
        run.Extra["passes"] = shares.Sum(s => s.Passes) / (double)shares.Length;
        if (shares.Length > 1)
            run.Notes.Add($"each locality scans its own tree (two ordered halves, not one merged order): " +
                string.Join(", ", shares.Select(s => $"{s.Passes} passes over {s.Keys.Count:N0} in {s.Ticks / (double)Stopwatch.Frequency:F3} s")));
        return run;
    }

    private static void VerifyScan(ReadShare s) =>
        (s.Records, s.OutOfOrder, s.Wrong, _) = ScanPass(s.Tree.OpenCursor(), verify: true, s.Scratch);

    private static void ScanLoop(ReadShare s, long limit)
    {
        var cursor = s.Tree.OpenCursor();
        long start = Stopwatch.GetTimestamp(), now;
        do
        {
            var (records, _, _, sink) = ScanPass(cursor, verify: false, s.Scratch);
            s.Sink ^= sink;
            s.Measured += records;
            if (records != s.Keys.Count) s.ShortPasses++;
            s.Passes++;
            now = Stopwatch.GetTimestamp();
        } while (now - start < limit);
        s.Ticks = now - start;
    }

    private static (long Records, long OutOfOrder, long Wrong, ulong Sink) ScanPass(BTreeCursor c, bool verify, byte[] scratch)
    {
        long records = 0, outOfOrder = 0, wrong = 0;
        ulong sink = 0;
        Span<byte> last = stackalloc byte[KeyStream.KeySize];
        for (bool ok = c.SeekFirst(); ok; ok = c.MoveNext())
        {
            var key = c.Key;
            if (verify)
            {
                if (records > 0 && key.SequenceCompareTo(last) <= 0) outOfOrder++;
                if (!BTreeValues.Matches(key, c.Value, scratch)) wrong++;
                key.CopyTo(last);
            }
            else sink ^= BinaryPrimitives.ReadUInt64LittleEndian(key) ^ c.Value[0];
            records++;
        }
        return (records, outOfOrder, wrong, sink);
    }

    // ---- after a window

    public override async Task AfterAsync(string workload, KeySet keys, PhaseRun run)
    {
        CheckHealth($"after {workload}");
        if (workload is not (BTreeBench.Insert or BTreeBench.Delete)) return;
        long t0 = Stopwatch.GetTimestamp();
        await _engine.Domain.CheckpointAsync();
        run.Notes.Add($"after the window: checkpoint {Stopwatch.GetElapsedTime(t0).TotalSeconds:F2} s (placing and syncing what the window logged; not in the rate)");
        CheckHealth($"after the checkpoint following {workload}");
        if (workload != BTreeBench.Insert) return; // VerifyAsync checks the trees are empty
        var used = await Task.WhenAll(Localities.Select(l => l.RunAsync(() => (l.Segment!.Allocator.UsedBytes, l.Segment!.Size))));
        long bytes = used.Sum(u => u.UsedBytes);
        double perKey = bytes / (double)Math.Max(1, keys.Count);
        run.Extra["storage_bytes_per_key"] = perKey;
        run.Notes.Add($"storage after insert: {bytes / (double)(1 << 20):N1} MiB allocated in the segments (of {used.Sum(u => u.Size) >> 20} MiB): {perKey:N1} B per key " +
            $"(key + value: {KeyStream.KeySize + BTreeValues.ValueSize} B)");
        run.Notes.Add($"engine: {Localities.Count} localities, segments of {_options.SegmentSize >> 20} MiB (max {_options.SegmentMaxSize >> 20} MiB), log {_options.LogSize >> 20} MiB; " +
            $"{_writersPerLocality} writers per locality, each awaiting its transaction's persistence (durable)");
    }

    public override async Task VerifyAsync(KeySet keys, bool empty)
    {
        var parts = Parts(keys);
        string when = empty ? "after deleting every key" : "after the insert";
        var found = await Task.WhenAll(Localities.Select((l, i) => l.RunAsync(async () =>
        {
            var tree = _trees[i];
            var stream = parts[i].Insert;
            long missing = 0, wrong = 0;
            if (empty)
            {
                // the header's count, and a cursor finding no first record
                if (tree.OpenCursor().SeekFirst()) wrong++;
            }
            else
            {
                var scratch = new byte[BTreeValues.ValueSize];
                for (int from = 0; from < stream.Count; from += Chunk)
                {
                    for (int k = from; k < Math.Min(stream.Count, from + Chunk); k++)
                    {
                        var key = stream.Key(k);
                        if (tree.Lookup(key, out var value) != BTreeStatus.Ok) missing++;
                        else if (!BTreeValues.Matches(key, value, scratch)) wrong++;
                    }
                    await Task.Yield();
                }
            }
            var check = tree.Check(); // fsck: nodes, checksums, order, levels, the header's count against the records found
            return (Count: tree.Count, Expected: empty ? 0L : stream.Count, missing, wrong, Check: check);
        })));
        for (int i = 0; i < found.Length; i++)
        {
            var f = found[i];
            if (!f.Check.Healthy) throw new InvalidOperationException($"{_system}: {when}: fsck of locality {i}'s tree: {f.Check}");
            if (empty) CheckEmpty(_system, $"{when} (locality {i})", f.Count, f.wrong != 0);
            else CheckVerified(_system, $"{when} (locality {i})", f.Count, f.Expected, f.missing, f.wrong);
        }
        CheckHealth(when);
    }

    public override async Task SabotageAsync(KeySet keys, Sabotage what)
    {
        var key = what == Sabotage.ExtraKey ? ExtraKey : keys.Insert.Key(keys.Count / 2).ToArray();
        int i = KeySet.PartOf(key, Localities.Count);
        var l = Localities[i];
        var tree = _trees[i];
        var st = await l.RunAsync(async () =>
        {
            var value = what == Sabotage.WrongValue ? WrongValueOf(key) : new byte[BTreeValues.ValueSize];
            if (what == Sabotage.ExtraKey) BTreeValues.Fill(key, value);
            var credit = what switch
            {
                Sabotage.DropKey => tree.DeleteCredit(),
                Sabotage.WrongValue => tree.UpdateCredit(KeyStream.KeySize, BTreeValues.ValueSize),
                _ => tree.InsertCredit(KeyStream.KeySize, BTreeValues.ValueSize),
            };
            var tx = await l.Segment!.BeginAsync(credit);
            TxPersistence persisted;
            BTreeStatus status;
            try
            {
                status = what switch
                {
                    Sabotage.DropKey => tree.Delete(tx, key),
                    Sabotage.WrongValue => tree.Update(tx, key, value),
                    _ => tree.Insert(tx, key, value),
                };
                persisted = tx.Close();
            }
            finally
            {
                tx.Dispose();
            }
            await persisted;
            return status;
        });
        if (st != BTreeStatus.Ok) throw new InvalidOperationException($"{_system}: sabotage {what}: {st}");
    }

    public override async ValueTask DisposeAsync()
    {
        if (_ownsEngine) await _engine.DisposeAsync();
    }
}
