using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Motr.Be.BTree;

public sealed unsafe partial class BTree
{
    /// <summary>
    /// Unsigned lexicographic order, shorter first: 8 bytes at a time as big-endian words for the short
    /// keys metadata mostly has; long keys go to the vectorized library compare.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Bytewise(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        int n = Math.Min(a.Length, b.Length);
        if (n > 32) return a.SequenceCompareTo(b);
        ref byte pa = ref MemoryMarshal.GetReference(a);
        ref byte pb = ref MemoryMarshal.GetReference(b);
        int i = 0;
        for (; i + 8 <= n; i += 8)
        {
            ulong x = Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref pa, i));
            ulong y = Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref pb, i));
            if (x != y) return BinaryPrimitives.ReverseEndianness(x) < BinaryPrimitives.ReverseEndianness(y) ? -1 : 1;
        }
        for (; i < n; i++)
        {
            int d = Unsafe.Add(ref pa, i) - Unsafe.Add(ref pb, i);
            if (d != 0) return d;
        }
        return a.Length - b.Length;
    }

    /// <summary>Key of record <paramref name="i"/>: in place for fixed keys (no record parsing), else <see cref="KeyAt"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ReadOnlySpan<byte> SearchKey(Node n, int i, int at, int k) =>
        k > 0 ? new ReadOnlySpan<byte>(n.P + n.RecOffset(i) + at, k) : KeyAt(n, i);

    /// <summary>Where <paramref name="key"/> sorts against the node's key prefix (see <see cref="ComparePrefix"/>; 0 when there is none); <paramref name="bits"/> is its length.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int PrefixOrder(Node n, ReadOnlySpan<byte> key, out int bits)
    {
        bits = n.PrefixBits;
        return bits == 0 ? 0 : ComparePrefix(key, n.Prefix, bits);
    }

    /// <summary>
    /// The first index in [<paramref name="lo"/>, <paramref name="hi"/>) whose tag is above <paramref name="t"/>
    /// (<paramref name="above"/>) or at or above it (<paramref name="hi"/> if none), in an index of entries
    /// <paramref name="stride"/> words long.
    /// </summary>
    /// <remarks>
    /// Branch-free: each step moves the base by a mask, not a jump. Tags of random keys send a
    /// branchy binary search either way at every step, a mispredicted branch per probe on every level of
    /// every descent; here a step waits only for its probe's load, which the index prefetch made a cache hit.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int TagBound(uint* idx, int stride, int lo, int hi, uint t, bool above)
    {
        int n = hi - lo;
        if (n <= 0) return lo;
        // Tags are 16 bits: "m <= t" is "m < t + 1", and m - bound is negative exactly when m < bound, so its
        // sign, spread by an arithmetic shift, is the step's mask (the JIT turns no ternary in a loop into a cmov).
        int bound = (int)t + (above ? 1 : 0);
        uint* p = idx + (nint)stride * lo;
        int b = 0;
        while (n > 1)
        {
            int half = n >> 1;
            b += half & (((int)(p[(nint)stride * (b + half)] >> 16) - bound) >> 31);
            n -= half;
        }
        return lo + b + (int)((uint)((int)(p[(nint)stride * b] >> 16) - bound) >> 31);
    }

    /// <summary>The child to follow: the last record whose key is not above <paramref name="key"/> (record 0 stands for everything below record 1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int SearchInternal(Node n, ReadOnlySpan<byte> key)
    {
        int count = n.Count;
        if (count <= 1) return 0;
        // Fixed keys sit at a fixed place in every record: no record parsing per compare.
        int at = Node.LengthFields(n.Format), k = n.Format != NodeFormat.Variable ? n.H.KeySize : 0;
        int lo = 1, hi = count - 1;
        if (Tagged)
        {
            int c = PrefixOrder(n, key, out int bits);
            if (c != 0) return c < 0 ? 0 : count - 1;
            // Tags rise with keys: records tagged below the key's tag are below it, those above are above.
            uint t = TagOf(key, bits);
            uint* idx = n.Index; // entries of two words: [offset | tag << 16] [child / 64]
            int last = TagBound(idx, 2, 1, count, t, above: true) - 1; // the last record tagged at or below t
            if (last == 0 || idx[2 * last] >> 16 != t) return last;
            if (Compare(SearchKey(n, last, at, k), key) <= 0) return last;
            if (last == 1 || idx[2 * (last - 1)] >> 16 != t) return last - 1;
            // Several records share the key's tag: compare whole keys among them.
            lo = TagBound(idx, 2, 1, last - 1, t, above: false);
            hi = last - 1;
        }
        int ans = lo - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            if (Compare(SearchKey(n, mid, at, k), key) <= 0)
            {
                ans = mid;
                lo = mid + 1;
            }
            else hi = mid - 1;
        }
        return ans;
    }

    /// <summary>Index of <paramref name="key"/> in a leaf, or where it would go.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int SearchLeaf(Node n, ReadOnlySpan<byte> key, out bool found)
    {
        int count = n.Count;
        int at = Node.LengthFields(n.Format), k = n.Format != NodeFormat.Variable ? n.H.KeySize : 0;
        int lo = 0, hi = count - 1;
        if (Tagged)
        {
            int c = PrefixOrder(n, key, out int bits);
            if (c != 0)
            {
                found = false;
                return c < 0 ? 0 : count;
            }
            uint t = TagOf(key, bits);
            uint* idx = n.Index;
            // l: the first record tagged at or above t; the key goes at or after it.
            int l = TagBound(idx, 1, 0, count, t, above: false);
            if (l == count || idx[l] >> 16 != t)
            {
                found = false;
                return l;
            }
            int first = Compare(SearchKey(n, l, at, k), key);
            if (first >= 0)
            {
                found = first == 0;
                return l;
            }
            if (l + 1 == count || idx[l + 1] >> 16 != t)
            {
                found = false;
                return l + 1;
            }
            // Several records share the key's tag: compare whole keys among them.
            lo = l + 1;
            hi = TagBound(idx, 1, lo, count, t, above: true) - 1;
        }
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            int c = Compare(SearchKey(n, mid, at, k), key);
            if (c < 0) lo = mid + 1;
            else if (c > 0) hi = mid - 1;
            else
            {
                found = true;
                return mid;
            }
        }
        found = false;
        return lo;
    }
}
