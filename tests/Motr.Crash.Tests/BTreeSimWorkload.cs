using Motr.Be;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Storage;
using Motr.Be.Tx;
using Motr.Runtime;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Crash.Tests;

/// <summary>
/// The b+tree workload of the simulated crash tests: per locality a tree of 512-byte nodes (so splits, merges,
/// rebalances and root changes happen within a few hundred transactions) over a small key space of variable keys
/// (1-40 bytes, some prefixes of others) with values of 0-2000 bytes (many out of node), driven by several
/// concurrent writers whose transactions hold 1-4 inserts, deletes and updates, some aborted.
/// </summary>
public static class BTreeSimWorkload
{
    /// <summary>Segments (and localities).</summary>
    public const int Segments = 2;

    /// <summary>Initial segment size; the allocator grows a segment up to <see cref="SegmentMaxSize"/> when the tree needs it.</summary>
    public const long SegmentSize = 32 * 1024;

    /// <summary>The size segments may grow to.</summary>
    public const long SegmentMaxSize = 256 * 1024;

    /// <summary>
    /// Log size: a 512 KiB record area. A tree operation's credit is its worst case (every level splits, each split
    /// capturing whole nodes): 30-60 KiB of log reservation per operation at heights 1-3, so the smallest log would
    /// refuse a transaction of four; this one still wraps during the run.
    /// </summary>
    public const long LogSize = 4096 + 512 * 1024;

    /// <summary>
    /// Largest log reservation a workload transaction may need (about a quarter of the record area; the engine takes
    /// up to half): a planned transaction over it drops its last operations.
    /// </summary>
    public const long ReservationBudget = (LogSize - 4096) / 4;

    /// <summary>The log space a credit reserves (LogFormat.Reservation, within a few hundred bytes).</summary>
    public static long Reservation(TxCredit c) => 2 * (c.Regions * 24L + c.Bytes + 1024);

    /// <summary>Tree node size: the smallest, for deep trees.</summary>
    public const int NodeSize = 512;

    /// <summary>Distinct keys per locality.</summary>
    public const int KeySpace = 160;

    /// <summary>Most operations per transaction.</summary>
    public const int MaxOps = 4;

    /// <summary>The options every open of a simulated b+tree domain uses.</summary>
    public static DomainOptions Options(IStorage storage, bool createIfMissing = false, bool verifyCaptures = false,
        Action<RecoveredPayload>? onPayload = null, Action<string>? onWarning = null) => new()
    {
        Storage = storage,
        CreateIfMissing = createIfMissing,
        Segments = Segments,
        SegmentSize = SegmentSize,
        SegmentMaxSize = SegmentMaxSize,
        LogSize = LogSize,
        CheckpointFraction = 0.1,
        CheckpointInterval = TimeSpan.FromMilliseconds(2),
        VerifyCaptures = verifyCaptures,
        OnRecoveredPayload = onPayload,
        OnWarning = onWarning,
    };

    /// <summary>A new storage holding a freshly created, cleanly closed domain, with an empty op log.</summary>
    public static async Task<SimStorage> CreateDomainAsync()
    {
        var storage = new SimStorage();
        await using (var d = await Domain.OpenAsync(Options(storage, createIfMissing: true))) { }
        return storage.Clone();
    }

    /// <summary>The key table of a run: <see cref="KeySpace"/> distinct keys of 1-40 bytes, a quarter of them prefixes or extensions of others.</summary>
    public static byte[][] Keys(int seed)
    {
        var rng = new Random(seed ^ 0x5EED);
        var keys = new List<byte[]>();
        var seen = new HashSet<byte[]>(ByteKeys.Instance);
        while (keys.Count < KeySpace)
        {
            byte[] k;
            if (keys.Count > 8 && rng.Next(4) == 0)
            {
                // A prefix or an extension of another key: separators between such keys are the hard cases.
                var other = keys[rng.Next(keys.Count)];
                int len = rng.Next(1, 41);
                k = new byte[len];
                other.AsSpan(0, Math.Min(len, other.Length)).CopyTo(k);
                if (len > other.Length) rng.NextBytes(k.AsSpan(other.Length));
            }
            else
            {
                k = new byte[rng.Next(10) == 0 ? rng.Next(1, 3) : rng.Next(1, 41)];
                rng.NextBytes(k);
                // Few distinct first bytes: long common prefixes.
                k[0] = (byte)(k[0] & 0x0F);
            }
            if (seen.Add(k)) keys.Add(k);
        }
        return keys.ToArray();
    }

    /// <summary>A value: empty, short (in node), 100-300 bytes, or 300-2000 bytes (out of node).</summary>
    private static byte[] Value(Random rng)
    {
        int len = rng.Next(100) switch
        {
            < 8 => 0,
            < 40 => rng.Next(1, 60),
            < 70 => rng.Next(100, 301),
            _ => rng.Next(300, 2001),
        };
        var v = new byte[len];
        rng.NextBytes(v);
        return v;
    }

    /// <summary>What a workload run did.</summary>
    public sealed record Result(long Closed, long Aborted, long CreditRetries, long Ops, long NoOps, long Inserts, long Deletes, long Updates,
        long LargeValues, long Splits, long Merges, long Rebalances, int MinHeight, int MaxHeight, long RootChanges, long MaxRecords,
        long SpaceWaits, long MaxReservation, long[] SegmentSizes, DomainStats Stats, IReadOnlyList<string> CaptureViolations);

    private sealed class LocalityState(Tree tree)
    {
        public readonly Tree Tree = tree;
        public readonly SortedDictionary<byte[], byte[]> Live = new(ByteKeys.Instance);
        public long ClosedHere;
        public int Height = tree.Height, MinHeight = int.MaxValue, MaxHeight;
        public long RootChanges, MaxRecords;
    }

    /// <summary>
    /// Creates the tree of every locality of <paramref name="engine"/> (tx 1 of each segment), then runs
    /// <paramref name="writersPerLocality"/> concurrent writers per locality, each closing or aborting
    /// <paramref name="txsPerWriter"/> transactions of 1-4 tree operations. Closed transactions go into
    /// <paramref name="models"/>; when a transaction's persistence completes, a <see cref="PersistedMark"/> goes into
    /// <paramref name="storage"/>'s op log. Every status a tree operation returns is checked against the model, and
    /// now and then (and at the end) the whole tree is compared with it and checked.
    /// </summary>
    public static async Task<Result> RunAsync(Engine engine, SimStorage storage, BTreeSegmentModel[] models, int seed,
        int writersPerLocality, int txsPerWriter)
    {
        long maxReservation = 0;
        long closed = 0, aborted = 0, retries = 0, ops = 0, noops = 0, inserts = 0, deletes = 0, updates = 0, large = 0;
        var keys = Keys(seed);
        var states = new LocalityState[engine.Localities.Count];
        // Tx 1 of every segment: the tree.
        await Task.WhenAll(engine.Localities.Select(loc => loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            using var tx = await seg.BeginAsync(Tree.CreateCredit + Segment.RootCredit);
            var t = Tree.Create(tx, seg, new BTreeConfig { NodeSize = NodeSize });
            seg.SetRoot(tx, BTreeSegmentModel.RootName, t.Offset);
            var persisted = tx.Close();
            models[loc.Index].AddCreate(tx.Id, t.Offset);
            states[loc.Index] = new LocalityState(t);
            long id = tx.Id;
            await persisted;
            storage.Mark(new PersistedMark(loc.Index, id));
        })));

        var tasks = new List<Task>();
        foreach (var loc in engine.Localities)
        {
            var seg = loc.Segment!;
            int index = loc.Index;
            var model = models[index];
            var st = states[index];
            var t = st.Tree;
            for (int w = 0; w < writersPerLocality; w++)
            {
                var rng = new Random(unchecked(seed * 1_000_003 + index * 7_919 + w * 104_729));
                int writer = w;
                tasks.Add(loc.RunAsync(async () =>
                {
                    var plan = new (byte[] Key, byte[] Value, int Roll)[MaxOps];
                    var pending = new Dictionary<byte[], byte[]?>(ByteKeys.Instance);
                    for (int i = 0; i < txsPerWriter; i++)
                    {
                        await RunCoverage.ForcedCheckpointAsync(engine, index, writer, i, txsPerWriter);
                        if (rng.Next(4) == 0) await Task.Yield();
                        int n = rng.Next(1, MaxOps + 1);
                        bool abort = rng.Next(8) == 0;
                        for (int o = 0; o < n; o++) plan[o] = (keys[rng.Next(keys.Length)], Value(rng), rng.Next(100));
                        var credit = Credit(t, plan.AsSpan(0, n));
                        while (n > 1 && Reservation(credit) > ReservationBudget) credit = Credit(t, plan.AsSpan(0, --n));
                        InterlockedMax(ref maxReservation, Reservation(credit));
                        using var tx = await seg.BeginAsync(credit);
                        // From here to Close/Abort: no await (DESIGN invariant 1). The tree may have grown while we
                        // waited for log space; then the credit is short: give up this attempt (nothing done) and retry.
                        if (!credit.Covers(Credit(t, plan.AsSpan(0, n))))
                        {
                            tx.Abort();
                            Interlocked.Increment(ref retries);
                            i--;
                            continue;
                        }
                        // Growth phases and shrink phases (by the locality's closed txs), so the tree's height goes up and down.
                        bool grow = st.ClosedHere / 60 % 2 == 0;
                        pending.Clear();
                        bool shortCredit = false;
                        bool Present(byte[] k) => pending.TryGetValue(k, out var pv) ? pv != null : st.Live.ContainsKey(k);
                        for (int o = 0; o < n; o++)
                        {
                            // An operation that grew the tree may leave too little credit for the next one (each checks
                            // its worst case at the current height before it changes anything): abort and retry.
                            if (o > 0 && !new TxCredit(tx.Credit.Regions - tx.Used.Regions, tx.Credit.Bytes - tx.Used.Bytes).Covers(MaxOpCredit(t, plan[o])))
                            {
                                shortCredit = true;
                                break;
                            }
                            var (key, value, roll) = plan[o];
                            bool present = Present(key), swapped = false;
                            // Shrink phase: most picks of an absent key become deletes of a present one (a delete's
                            // credit does not depend on the key): half of them the smallest key, as a queue drains
                            // (the left edge of the tree empties leaf after leaf), the others any key.
                            if (!present && !grow && roll >= 30 && roll < 92 && st.Live.Count > 0)
                            {
                                key = roll < 61 ? st.Live.Keys.First() : st.Live.Keys.ElementAt(rng.Next(st.Live.Count));
                                present = Present(key);
                                swapped = true;
                            }
                            BTreeStatus expected, got;
                            string op;
                            if (swapped || (present ? roll < (grow ? 20 : 70) : roll >= 92 && roll < 96))
                            {
                                op = "delete";
                                got = t.Delete(tx, key);
                                expected = present ? BTreeStatus.Ok : BTreeStatus.NotFound;
                                if (got == BTreeStatus.Ok) { pending[key] = null; Interlocked.Increment(ref deletes); }
                            }
                            else if (present ? roll < 96 : roll >= 96)
                            {
                                op = "update";
                                got = t.Update(tx, key, value);
                                expected = present ? BTreeStatus.Ok : BTreeStatus.NotFound;
                                if (got == BTreeStatus.Ok) { pending[key] = value; Interlocked.Increment(ref updates); }
                            }
                            else
                            {
                                op = "insert";
                                got = t.Insert(tx, key, value);
                                expected = present ? BTreeStatus.Exists : BTreeStatus.Ok;
                                if (got == BTreeStatus.Ok) { pending[key] = value; Interlocked.Increment(ref inserts); }
                            }
                            if (got != expected)
                                throw new InvalidOperationException($"seed {seed}, segment {seg.Id}, writer {writer}, tx {i}: {op} of key {ByteKeys.Show(key)} " +
                                    $"({value.Length}-byte value) returned {got}, expected {expected}");
                            Interlocked.Increment(ref ops);
                            if (got != BTreeStatus.Ok) Interlocked.Increment(ref noops);
                            else if (op != "delete" && value.Length > 104) Interlocked.Increment(ref large);
                        }
                        if (shortCredit)
                        {
                            tx.Abort();
                            Interlocked.Increment(ref retries);
                            i--;
                            continue;
                        }
                        if (abort)
                        {
                            tx.Abort();
                            Interlocked.Increment(ref aborted);
                            // The abort restored every node: the tree is the last closed state again.
                            if (t.Count != st.Live.Count || rng.Next(8) == 0) Compare(t, st.Live, $"seed {seed}, segment {seg.Id}: after an abort");
                            continue;
                        }
                        foreach (var (k, v) in pending)
                        {
                            if (v is null) st.Live.Remove(k);
                            else st.Live[k] = v;
                        }
                        var persisted = tx.Close();
                        long id = tx.Id;
                        model.Add(id, st.Live.ToArray());
                        st.ClosedHere++;
                        Interlocked.Increment(ref closed);
                        int h = t.Height;
                        if (h != st.Height) st.RootChanges++;
                        st.Height = h;
                        st.MinHeight = Math.Min(st.MinHeight, h);
                        st.MaxHeight = Math.Max(st.MaxHeight, h);
                        st.MaxRecords = Math.Max(st.MaxRecords, st.Live.Count);
                        if (t.Count != st.Live.Count) throw new InvalidOperationException($"seed {seed}, segment {seg.Id}, tx {id}: the tree counts {t.Count} records, the model {st.Live.Count}");
                        await persisted;
                        storage.Mark(new PersistedMark(index, id));
                    }
                }));
            }
        }
        await Task.WhenAll(tasks);
        foreach (var loc in engine.Localities)
            await loc.RunAsync(() => Compare(states[loc.Index].Tree, states[loc.Index].Live, $"seed {seed}, segment {loc.Segment!.Id}: end of the run"));
        var sizes = await Task.WhenAll(engine.Localities.Select(l => l.RunAsync(() => l.Segment!.Size)));
        var treeStats = await Task.WhenAll(engine.Localities.Select(l => l.RunAsync(() => states[l.Index].Tree.Stats)));
        long spaceWaits = engine.Localities.Sum(l => l.Segment!.TxStats.SpaceWaits);
        return new Result(closed, aborted, retries, ops, noops, inserts, deletes, updates, large,
            treeStats.Sum(s => s.Splits), treeStats.Sum(s => s.Merges), treeStats.Sum(s => s.Rebalances),
            states.Min(s => s.MinHeight), states.Max(s => s.MaxHeight), states.Sum(s => s.RootChanges), states.Max(s => s.MaxRecords),
            spaceWaits, maxReservation, sizes, engine.Domain.Stats, engine.Domain.CaptureViolations.ToList());
    }

    private static void InterlockedMax(ref long target, long value)
    {
        long seen;
        while ((seen = Interlocked.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, seen) != seen) { }
    }

    /// <summary>Credit of a planned transaction: each operation may turn out an insert, an update or a delete.</summary>
    private static TxCredit Credit(Tree t, ReadOnlySpan<(byte[] Key, byte[] Value, int Roll)> plan)
    {
        var credit = TxCredit.Zero;
        foreach (var op in plan) credit += MaxOpCredit(t, op);
        return credit;
    }

    private static TxCredit MaxOpCredit(Tree t, (byte[] Key, byte[] Value, int Roll) op) =>
        TxCredit.Max(t.UpdateCredit(op.Key.Length, op.Value.Length), t.DeleteCredit());

    /// <summary>Checks the tree (fsck) and compares a full scan with <paramref name="live"/>; throws on a difference.</summary>
    private static void Compare(Tree t, SortedDictionary<byte[], byte[]> live, string when)
    {
        var report = t.Check();
        if (!report.Healthy) throw new InvalidOperationException($"{when}: fsck: {report}");
        if (BTreeSegmentModel.Diff(BTreeSegmentModel.Scan(t), live.ToArray()) is { } diff) throw new InvalidOperationException($"{when}: the tree differs from the model: {diff}");
    }
}
