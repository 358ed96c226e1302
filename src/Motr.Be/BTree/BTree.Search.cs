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

    /// <summary>The child to follow: the last record whose key is not above <paramref name="key"/> (record 0 stands for everything below record 1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int SearchInternal(Node n, ReadOnlySpan<byte> key)
    {
        int lo = 1, hi = n.Count - 1, ans = 0;
        if (n.Format != NodeFormat.Variable)
        {
            // Fixed keys sit at a fixed place in every record: no record parsing per compare.
            int at = Node.LengthFields(n.Format), k = n.H.KeySize;
            ushort* idx = n.Index;
            while (lo <= hi)
            {
                int mid = (lo + hi) >> 1;
                if (Compare(new ReadOnlySpan<byte>(n.P + (idx[mid] << 3) + at, k), key) <= 0)
                {
                    ans = mid;
                    lo = mid + 1;
                }
                else hi = mid - 1;
            }
            return ans;
        }
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            if (Compare(KeyAt(n, mid), key) <= 0)
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
        int lo = 0, hi = n.Count - 1;
        if (n.Format != NodeFormat.Variable)
        {
            int at = Node.LengthFields(n.Format), k = n.H.KeySize;
            ushort* idx = n.Index;
            while (lo <= hi)
            {
                int mid = (lo + hi) >> 1;
                int c = Compare(new ReadOnlySpan<byte>(n.P + (idx[mid] << 3) + at, k), key);
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
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            int c = Compare(KeyAt(n, mid), key);
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
