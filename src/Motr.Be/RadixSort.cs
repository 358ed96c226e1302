namespace Motr.Be;

/// <summary>
/// Stable least-significant-digit radix ordering of small arrays of non-negative 64-bit keys (segment
/// offsets), 8 bits a pass, skipping the digits every key shares. A seal orders a few hundred ranges and
/// checksum marks per group: a comparison sort spent most of its time in mispredicted branches, this
/// spends a few linear passes, and keeps equal keys in arrival order (the latest mark for a place last).
/// </summary>
internal static class RadixSort
{
    /// <summary>
    /// Fills <paramref name="order"/> with the indexes of <paramref name="keys"/> in ascending key order,
    /// equal keys in index order. <paramref name="scratch"/> must be as long as the keys.
    /// </summary>
    public static void Order(ReadOnlySpan<long> keys, Span<int> order, Span<int> scratch)
    {
        int n = keys.Length;
        if (order.Length < n || scratch.Length < n) throw new ArgumentException("order and scratch must hold every key");
        Span<int> result = order[..n];
        Span<int> from = result, to = scratch[..n];
        long all = 0;
        for (int i = 0; i < n; i++)
        {
            from[i] = i;
            all |= keys[i];
        }
        if (all < 0) throw new ArgumentOutOfRangeException(nameof(keys), "keys must not be negative");
        Span<int> start = stackalloc int[256];
        for (int shift = 0; shift < 64 && (all >> shift) != 0; shift += 8)
        {
            start.Clear();
            for (int i = 0; i < n; i++) start[(int)(keys[i] >> shift) & 0xFF]++;
            if (start[(int)(keys[0] >> shift) & 0xFF] == n) continue; // every key has this digit
            int sum = 0;
            for (int d = 0; d < 256; d++)
            {
                int c = start[d];
                start[d] = sum;
                sum += c;
            }
            for (int j = 0; j < n; j++)
            {
                int i = from[j];
                to[start[(int)(keys[i] >> shift) & 0xFF]++] = i;
            }
            var t = from;
            from = to;
            to = t;
        }
        // After an odd number of passes the order sits in the scratch span.
        if (from != result) from.CopyTo(result);
    }
}
