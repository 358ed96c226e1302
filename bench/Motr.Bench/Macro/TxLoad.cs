using System.Diagnostics;
using Motr.Be.Segments;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Bench.Macro;

/// <summary>
/// The writers of the tx bench: on every locality, N async loops that each open a transaction,
/// capture <c>regions</c> random 64-byte regions of a 64 MiB area, change them, close, and await
/// persistence, then go again. The loop allocates nothing: the transaction is pooled, the
/// persistence awaitable is a struct sharing its group's completion, the random generator lives in
/// the state machine, and latencies go into a per-locality histogram.
/// </summary>
internal sealed class TxLoad
{
    /// <summary>The area starts after the segment header page.</summary>
    public const long AreaOffset = 4096;
    public const long AreaSize = 64L << 20;
    public const int RegionSize = 64;
    private const ulong SlotMask = AreaSize / RegionSize - 1;

    private const int WarmingUp = 0, Measuring = 1, Stopping = 2;

    /// <summary>What one locality's writers count; written only by that locality's thread.</summary>
    internal sealed class LocalityCounters
    {
        public readonly LatencyHistogram Latency = new();
        public long Completed;
    }

    private readonly int _regions;
    private readonly TxCredit _credit;
    private volatile int _phase = WarmingUp;

    public TxLoad(int localities, int regions)
    {
        _regions = regions;
        _credit = TxCredit.Region(RegionSize) * regions;
        Counters = new LocalityCounters[localities];
        for (int i = 0; i < localities; i++) Counters[i] = new LocalityCounters();
    }

    public LocalityCounters[] Counters { get; }

    /// <summary>Transactions whose persistence was awaited so far, on all localities (approximate while running).</summary>
    public long Completed => Counters.Sum(c => Volatile.Read(ref c.Completed));

    /// <summary>From now on, latencies of transactions closed are recorded.</summary>
    public void StartMeasuring() => _phase = Measuring;

    /// <summary>Every writer stops after its current transaction.</summary>
    public void Stop() => _phase = Stopping;

    /// <summary>Starts <paramref name="writers"/> loops on <paramref name="locality"/>; call on the locality. Completes when they stop.</summary>
    public Task StartWriters(Locality locality, int writers)
    {
        var segment = locality.Segment ?? throw new InvalidOperationException($"{locality} owns no segment");
        var counters = Counters[locality.Index];
        var loops = new Task[writers];
        for (int i = 0; i < writers; i++) loops[i] = WriteLoopAsync(segment, counters, XorShift64.SeedFor(locality.Index * (long)writers + i));
        return Task.WhenAll(loops);
    }

    private async Task WriteLoopAsync(Segment segment, LocalityCounters counters, ulong seed)
    {
        var rng = new XorShift64(seed);
        byte stamp = 0;
        while (_phase != Stopping)
        {
            var tx = await segment.BeginAsync(_credit);
            long closedAt;
            TxPersistence persisted;
            try
            {
                stamp++;
                for (int r = 0; r < _regions; r++)
                {
                    long offset = AreaOffset + (long)(rng.Next() & SlotMask) * RegionSize;
                    tx.Capture(offset, RegionSize).Fill(stamp);
                }
                closedAt = Stopwatch.GetTimestamp();
                persisted = tx.Close();
            }
            finally
            {
                tx.Dispose();
            }
            bool measured = _phase == Measuring;
            await persisted;
            long now = Stopwatch.GetTimestamp();
            counters.Completed++;
            if (measured) counters.Latency.Record(now - closedAt);
        }
    }
}
