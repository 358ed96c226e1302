using System.Diagnostics;
using System.Numerics;

namespace Motr.Bench;

/// <summary>
/// Latency histogram over <see cref="Stopwatch"/> ticks with fixed log-linear buckets: 32 per power of
/// two, so a percentile is within 3.2 % of the true value. Recording is an index computation and an
/// increment; it never allocates. Not thread-safe: one histogram per recording thread, merged after.
/// </summary>
internal sealed class LatencyHistogram
{
    private const int SubBits = 5;
    private const int Sub = 1 << SubBits;
    private const int BucketCount = (64 - SubBits) * Sub;

    private readonly long[] _counts = new long[BucketCount];
    private long _count;
    private long _max;

    /// <summary>Values recorded.</summary>
    public long Count => _count;

    /// <summary>Largest value recorded, in ticks.</summary>
    public long MaxTicks => _max;

    /// <summary>Records one latency of <paramref name="ticks"/> (negative values count as 0).</summary>
    public void Record(long ticks)
    {
        if (ticks < 0) ticks = 0;
        _counts[Index(ticks)]++;
        _count++;
        if (ticks > _max) _max = ticks;
    }

    /// <summary>Adds every value of <paramref name="other"/>.</summary>
    public void Add(LatencyHistogram other)
    {
        for (int i = 0; i < BucketCount; i++) _counts[i] += other._counts[i];
        _count += other._count;
        _max = Math.Max(_max, other._max);
    }

    /// <summary>The <paramref name="quantile"/> (0..1) in microseconds; NaN when empty.</summary>
    public double PercentileMicros(double quantile) => TicksToMicros(PercentileTicks(quantile));

    /// <summary>The <paramref name="quantile"/> (0..1) in ticks (middle of its bucket); NaN when empty.</summary>
    public double PercentileTicks(double quantile)
    {
        if (_count == 0) return double.NaN;
        long rank = Math.Clamp((long)Math.Ceiling(quantile * _count), 1, _count);
        long seen = 0;
        for (int i = 0; i < BucketCount; i++)
        {
            seen += _counts[i];
            if (seen >= rank) return Math.Min(Lower(i) + (Width(i) - 1) / 2.0, _max);
        }
        return _max;
    }

    /// <summary>Converts <see cref="Stopwatch"/> ticks to microseconds.</summary>
    public static double TicksToMicros(double ticks) => ticks * 1e6 / Stopwatch.Frequency;

    private static int Index(long v)
    {
        if (v < Sub) return (int)v;
        int shift = 63 - BitOperations.LeadingZeroCount((ulong)v) - SubBits;
        return ((shift + 1) << SubBits) + (int)((v >> shift) & (Sub - 1));
    }

    private static long Lower(int i) => i < Sub ? i : (long)(Sub + (i & (Sub - 1))) << ((i >> SubBits) - 1);

    private static long Width(int i) => i < Sub ? 1 : 1L << ((i >> SubBits) - 1);
}
