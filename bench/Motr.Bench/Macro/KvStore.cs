using System.Diagnostics;

namespace Motr.Bench.Macro;

/// <summary>What one workload measured on one store: its own timing from the first operation to the last.</summary>
internal sealed class PhaseRun
{
    /// <summary>Operations done (records for a scan).</summary>
    public long Ops;

    /// <summary>Stopwatch ticks from the first operation's start to the last one's end.</summary>
    public long Ticks;

    /// <summary>Per-operation latency; empty for a scan.</summary>
    public LatencyHistogram Latency { get; } = new();

    /// <summary>What <see cref="Latency"/> measures, for the notes ("begin -> persisted, every op").</summary>
    public string LatencyWhat = "";

    /// <summary>Log counters over the window (motr inserts and deletes only).</summary>
    public double? LogBytesPerOp { get; set; }
    public double? FsyncsPerSec { get; set; }
    public double? OpsPerRecord { get; set; }

    public Dictionary<string, double> Extra { get; } = new();
    public List<string> Notes { get; } = new();

    public double Seconds => Ticks / (double)Stopwatch.Frequency;
}

/// <summary>
/// A key-value store under the btree bench: one instance of a system (motr's engine with its trees, an
/// LMDB environment, a SQLite database) holding the bench's data set. Workloads run in order: insert,
/// lookup, scan, delete. Each method times itself and checks its outcome (a missing key, a short scan,
/// a failed insert is an error: a benchmark of a wrong result measures nothing).
/// </summary>
internal abstract class KvStore : IAsyncDisposable
{
    /// <summary>Keys between two latency samples of a lookup (timestamps around every op would cost a few % of a lookup).</summary>
    public const int LookupSampleEvery = 16;

    public abstract string System { get; }

    /// <summary>Concurrent loops running <paramref name="workload"/>, all localities together.</summary>
    public abstract int Writers(string workload);

    /// <summary>Done outside the measured window before a workload on <paramref name="keys"/> (motr splits them by locality).</summary>
    public virtual void Prepare(KeySet keys) { }

    /// <summary>Inserts every key of <paramref name="keys"/> in its insert order.</summary>
    public abstract Task<PhaseRun> InsertAsync(KeySet keys);

    /// <summary>Looks every key up in its lookup order and checks it is there (and its value, on sampled ops).</summary>
    public abstract Task<PhaseRun> LookupAsync(KeySet keys);

    /// <summary>
    /// Scans every record in key order: one unmeasured pass that checks the count and the order, then
    /// measured passes until <paramref name="atLeast"/> has passed (at least one). A measured pass reads
    /// the first 8 bytes of every key and the first byte of every value.
    /// </summary>
    public abstract Task<PhaseRun> ScanAsync(KeySet keys, TimeSpan atLeast);

    /// <summary>Deletes every key in its delete order; the store is empty afterwards.</summary>
    public abstract Task<PhaseRun> DeleteAsync(KeySet keys);

    /// <summary>Bytes allocated so far by the threads running the loops (motr's locality threads); null when the loops run on pool threads.</summary>
    public virtual Task<long?> LoopAllocatedAsync() => Task.FromResult<long?>(null);

    /// <summary>Runs after a workload's window closes, outside it: adds to its notes and extras (storage used, checkpoint time).</summary>
    public virtual Task AfterAsync(string workload, KeySet keys, PhaseRun run) => Task.CompletedTask;

    /// <summary>
    /// Outside every window: checks that the store holds exactly <paramref name="keys"/>, each with its value
    /// (<paramref name="empty"/> false: after the insert), or nothing at all (true: after the delete), by the
    /// store's own count and by looking every key up (motr also runs its fsck). Throws what it finds wrong.
    /// </summary>
    public abstract Task VerifyAsync(KeySet keys, bool empty);

    /// <summary>What <see cref="Sabotage"/> does to a store, for the self-check of the bench's own checks.</summary>
    public enum Sabotage
    {
        /// <summary>Deletes one key of the data set.</summary>
        DropKey,

        /// <summary>Overwrites one key's value with another of the same size.</summary>
        WrongValue,

        /// <summary>Inserts one key that is not in the data set.</summary>
        ExtraKey,
    }

    /// <summary>Self-check only: damages the store's contents as <paramref name="what"/> says (<paramref name="keys"/>: the data set).</summary>
    public abstract Task SabotageAsync(KeySet keys, Sabotage what);

    /// <summary>A key of no data set (its bytes differ from every random key in practice), for <see cref="Sabotage.ExtraKey"/>.</summary>
    protected static readonly byte[] ExtraKey = [0x5A, 0xB0, 0x7A, 0x6E, 0xE1, 0x7A, 0x0D, 0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0x11, 0x22, 0x33, 0x44];

    /// <summary>The value <see cref="Sabotage.WrongValue"/> writes for <paramref name="key"/>: its right value with the first byte flipped.</summary>
    protected static byte[] WrongValueOf(ReadOnlySpan<byte> key)
    {
        var v = new byte[BTreeValues.ValueSize];
        BTreeValues.Fill(key, v);
        v[0] ^= 0xFF;
        return v;
    }

    /// <summary>Throws unless a verification found nothing wrong.</summary>
    protected static void CheckVerified(string system, string when, long count, long expected, long missing, long wrong)
    {
        if (count != expected || missing != 0 || wrong != 0)
            throw new InvalidOperationException($"{system}: {when}: the store counts {count:N0} records, expected {expected:N0}; " +
                $"{missing:N0} keys missing, {wrong:N0} wrong values");
    }

    /// <summary>Throws unless a store found empty by its count and by a cursor's first step.</summary>
    protected static void CheckEmpty(string system, string when, long count, bool cursorFoundOne)
    {
        if (count != 0 || cursorFoundOne)
            throw new InvalidOperationException($"{system}: {when}: the store counts {count:N0} records and a cursor {(cursorFoundOne ? "found one" : "found none")}; expected an empty store");
    }

    /// <summary>
    /// Checks the first byte of every value a lookup window read (the loops XOR them into their sink, as they
    /// did before this check): a value's first byte is its key's first byte, so the sink must be the XOR of the
    /// keys' first bytes. Costs the window nothing; the full value is checked on sampled ops and by <see cref="VerifyAsync"/>.
    /// </summary>
    protected static void CheckLookupSink(string system, KeyStream keys, ulong sink)
    {
        ulong expected = 0;
        for (int i = 0; i < keys.Count; i++) expected ^= keys.Bytes[i * KeyStream.KeySize];
        if (sink != expected) throw new InvalidOperationException($"{system}: the lookups read values whose first bytes do not match their keys' (XOR 0x{sink:X2}, expected 0x{expected:X2})");
    }

    /// <summary>A store for the warm-up rounds (JIT tiers, caches): a throwaway instance in <paramref name="folder"/>, or motr's other trees in the same engine.</summary>
    public abstract Task<KvStore> OpenWarmUpAsync(string folder);

    public abstract ValueTask DisposeAsync();

    /// <summary>Where loops put what they read, so the JIT cannot drop the reads.</summary>
    protected static ulong Sink;

    /// <summary>Checks a verifying scan pass: every record seen, in bytewise key order, each with its key's value.</summary>
    protected static void CheckScan(string system, long records, long expected, long outOfOrder, long wrong)
    {
        if (records != expected) throw new InvalidOperationException($"{system}: the scan saw {records:N0} records, expected {expected:N0}");
        if (outOfOrder != 0) throw new InvalidOperationException($"{system}: the scan saw {outOfOrder:N0} keys not above the one before (bytewise order)");
        if (wrong != 0) throw new InvalidOperationException($"{system}: the scan saw {wrong:N0} values not matching their keys");
    }

    /// <summary>Checks a measured scan pass saw every record (one compare per pass, nothing per record).</summary>
    protected static void CheckPass(string system, long records, long expected)
    {
        if (records != expected) throw new InvalidOperationException($"{system}: a measured scan pass saw {records:N0} records, expected {expected:N0}");
    }

    /// <summary>
    /// The scan workload of a store whose passes run on the calling thread: one verifying pass
    /// (<see cref="CheckScan"/>), then timed passes of <paramref name="pass"/> until <paramref name="atLeast"/> has passed.
    /// </summary>
    /// <param name="pass">One pass over the store: given whether to verify, the records seen, the keys out of order, the values not matching their keys, and a sink of what was read.</param>
    protected static PhaseRun TimedScan(string system, long expected, TimeSpan atLeast, Func<bool, (long Records, long OutOfOrder, long Wrong, ulong Sink)> pass)
    {
        var run = new PhaseRun();
        var (verified, outOfOrder, wrong, _) = pass(true);
        CheckScan(system, verified, expected, outOfOrder, wrong);
        long limit = (long)(atLeast.TotalSeconds * Stopwatch.Frequency);
        long start = Stopwatch.GetTimestamp(), now;
        int passes = 0;
        ulong sink = 0;
        do
        {
            var (records, _, _, s) = pass(false);
            CheckPass(system, records, expected);
            run.Ops += records;
            sink ^= s;
            passes++;
            now = Stopwatch.GetTimestamp();
        } while (now - start < limit);
        run.Ticks = now - start;
        run.Extra["passes"] = passes;
        Sink ^= sink;
        return run;
    }
}
