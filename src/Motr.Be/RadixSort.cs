using System.Numerics;
using System.Runtime.InteropServices;

namespace Motr.Be;

/// <summary>
/// Stable least-significant-digit radix ordering of small arrays of non-negative 64-bit keys (segment
/// offsets), 8 to 11 bits a pass. A seal orders a few thousand ranges and checksum marks per group: a comparison
/// sort spent most of its time in mispredicted branches; this spends a few linear passes and keeps equal
/// keys in arrival order (the latest mark for a place last).
/// </summary>
/// <remarks>
/// Each key is packed with its index into one word (the bits the keys differ in above, the index below),
/// so a pass streams words instead of gathering keys through indexes, and every pass's digit counts come
/// from one read. Only the bits in which the keys differ are sorted on: offsets of a few hundred MiB with
/// shared low zero bits take three or four passes, not eight.
/// </remarks>
internal static class RadixSort
{
    /// <summary>
    /// Fills <paramref name="order"/> with the indexes of <paramref name="keys"/> in ascending key order,
    /// equal keys in index order. <paramref name="scratch"/> must hold twice as many words as there are keys.
    /// </summary>
    public static void Order(ReadOnlySpan<long> keys, Span<int> order, Span<ulong> scratch)
    {
        int n = keys.Length;
        if (order.Length < n || scratch.Length < 2 * n) throw new ArgumentException("order must hold every key, scratch twice as many words");
        if (n == 0) return;
        long first = keys[0], all = 0, vary = 0;
        for (int i = 0; i < n; i++)
        {
            all |= keys[i];
            vary |= keys[i] ^ first;
        }
        if (all < 0) throw new ArgumentOutOfRangeException(nameof(keys), "keys must not be negative");
        if (vary == 0)
        {
            for (int i = 0; i < n; i++) order[i] = i;
            return;
        }
        int low = BitOperations.TrailingZeroCount(vary);
        int bits = 64 - BitOperations.LeadingZeroCount((ulong)vary) - low;
        int indexBits = Math.Max(1, 32 - BitOperations.LeadingZeroCount((uint)(n - 1)));
        if (bits + indexBits > 64)
        {
            OrderWide(keys, all, order[..n], MemoryMarshal.Cast<ulong, int>(scratch)[..n]);
            return;
        }

        Span<ulong> from = scratch[..n], to = scratch.Slice(n, n);
        ulong keyMask = (1UL << bits) - 1;
        for (int i = 0; i < n; i++) from[i] = ((((ulong)keys[i] >> low) & keyMask) << indexBits) | (uint)i;

        // As few passes as digits of up to 11 bits allow, but no more buckets than about one per key:
        // a seal of 512 ranges or more orders 26-bit offsets in three passes of 9 bits, not four of 8 (the last of 2 bits).
        int maxDigit = Math.Clamp(BitOperations.Log2((uint)n), 8, 11);
        int passes = (bits + maxDigit - 1) / maxDigit;
        int digit = (bits + passes - 1) / passes;
        int buckets = 1 << digit;
        int mask = buckets - 1;
        Span<int> counts = stackalloc int[buckets * passes];
        counts.Clear();
        for (int j = 0; j < n; j++)
        {
            ulong d = from[j] >> indexBits;
            for (int p = 0; p < passes; p++, d >>= digit) counts[p * buckets + (int)(d & (uint)mask)]++;
        }
        for (int p = 0; p < passes; p++)
        {
            var start = counts.Slice(p * buckets, buckets);
            int shift = indexBits + digit * p;
            if (start[(int)(from[0] >> shift) & mask] == n) continue; // every key has this digit
            CountsToStarts(start);
            for (int j = 0; j < n; j++)
            {
                ulong v = from[j];
                to[start[(int)(v >> shift) & mask]++] = v;
            }
            var t = from;
            from = to;
            to = t;
        }
        ulong indexMask = (1UL << indexBits) - 1;
        for (int i = 0; i < n; i++) order[i] = (int)(from[i] & indexMask);
    }

    /// <summary>Keys too wide to share a word with their index (<paramref name="all"/>: every key OR-ed): indexes ordered through gathers of the keys.</summary>
    private static void OrderWide(ReadOnlySpan<long> keys, long all, Span<int> result, Span<int> scratch)
    {
        int n = keys.Length;
        Span<int> from = result, to = scratch;
        for (int i = 0; i < n; i++) from[i] = i;
        Span<int> start = stackalloc int[256];
        for (int shift = 0; shift < 64 && (all >> shift) != 0; shift += 8)
        {
            start.Clear();
            for (int i = 0; i < n; i++) start[(int)(keys[i] >> shift) & 0xFF]++;
            if (start[(int)(keys[0] >> shift) & 0xFF] == n) continue; // every key has this digit
            CountsToStarts(start);
            for (int j = 0; j < n; j++)
            {
                int i = from[j];
                to[start[(int)(keys[i] >> shift) & 0xFF]++] = i;
            }
            var t = from;
            from = to;
            to = t;
        }
        if (from != result) from.CopyTo(result);
    }

    /// <summary>Turns a pass's digit counts into where each digit's keys start in the pass's output.</summary>
    private static void CountsToStarts(Span<int> counts)
    {
        int sum = 0;
        for (int d = 0; d < counts.Length; d++)
        {
            int c = counts[d];
            counts[d] = sum;
            sum += c;
        }
    }
}
