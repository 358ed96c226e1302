using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Motr.Be.Tx;

namespace Motr.Be.BTree;

// Key prefixes and tags (see BTreeFormat.cs): what they are, how a node gets them, and keeping them true.
public sealed unsafe partial class BTree
{
    /// <summary>Longest node prefix: what the header holds.</summary>
    internal const int MaxPrefixBits = NodeHeader.PrefixLength * 8;

    /// <summary>Tags order keys only under bytewise order; a tree with its own comparer keeps them zero.</summary>
    private bool Tagged => _cmp is null;

    /// <summary>Bits [<paramref name="prefixBits"/>, <paramref name="prefixBits"/> + 16) of <paramref name="key"/>, zeros past its end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ushort TagOf(ReadOnlySpan<byte> key, int prefixBits)
    {
        int b = prefixBits >> 3, len = key.Length;
        ref byte k = ref MemoryMarshal.GetReference(key);
        uint w;
        if (b + 3 <= len) w = (uint)Unsafe.Add(ref k, b) << 16 | (uint)Unsafe.Add(ref k, b + 1) << 8 | Unsafe.Add(ref k, b + 2);
        else
        {
            w = 0;
            if (b < len) w = (uint)Unsafe.Add(ref k, b) << 16;
            if (b + 1 < len) w |= (uint)Unsafe.Add(ref k, b + 1) << 8;
        }
        return (ushort)(w >> (8 - (prefixBits & 7)));
    }

    /// <summary>
    /// Where <paramref name="key"/> sorts against every key beginning with the <paramref name="prefixBits"/>-bit
    /// <paramref name="prefix"/>: negative before all of them, positive after all, zero when it begins with it too.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int ComparePrefix(ReadOnlySpan<byte> key, byte* prefix, int prefixBits)
    {
        int full = prefixBits >> 3, rem = prefixBits & 7;
        int n = Math.Min(full, key.Length);
        ref byte k = ref MemoryMarshal.GetReference(key);
        for (int i = 0; i < n; i++)
        {
            int d = Unsafe.Add(ref k, i) - prefix[i];
            if (d != 0) return d;
        }
        if (key.Length <= full) return key.Length < full || rem != 0 ? -1 : 0; // a key that stops inside the prefix sorts first
        if (rem == 0) return 0;
        int mask = (0xFF00 >> rem) & 0xFF;
        return (Unsafe.Add(ref k, full) & mask) - prefix[full];
    }

    /// <summary>How many leading bits <paramref name="a"/> and <paramref name="b"/> share, at most <see cref="MaxPrefixBits"/>.</summary>
    internal static int CommonBits(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        int m = Math.Min(Math.Min(a.Length, b.Length), NodeHeader.PrefixLength);
        int i = a[..m].CommonPrefixLength(b[..m]);
        if (i == m) return i * 8;
        return i * 8 + BitOperations.LeadingZeroCount((uint)(a[i] ^ b[i])) - 24;
    }

    /// <summary>
    /// The separators around the node at path depth <paramref name="d"/>: every key routed to it is at or
    /// above <paramref name="low"/> and below <paramref name="high"/> (unset on the tree's edges).
    /// </summary>
    private void Fences(int d, out ReadOnlySpan<byte> low, out bool hasLow, out ReadOnlySpan<byte> high, out bool hasHigh)
    {
        low = high = default;
        hasLow = hasHigh = false;
        for (int e = d - 1; e >= 0 && !(hasLow && hasHigh); e--)
        {
            var p = new Node(_seg.Base, _path[e].Node);
            int i = _path[e].Index;
            if (!hasLow && i > 0)
            {
                low = KeyAt(p, i);
                hasLow = true;
            }
            if (!hasHigh && i + 1 < p.Count)
            {
                high = KeyAt(p, i + 1);
                hasHigh = true;
            }
        }
    }

    /// <summary>
    /// The outer bounds of children <paramref name="ri"/> - 1 and <paramref name="ri"/> of node <paramref name="p"/>
    /// (at path depth <paramref name="pd"/>) taken together: what a merged or rebalanced pair spans.
    /// </summary>
    private void PairFences(int pd, Node p, int ri, out ReadOnlySpan<byte> low, out bool hasLow, out ReadOnlySpan<byte> high, out bool hasHigh)
    {
        Fences(pd, out low, out hasLow, out high, out hasHigh);
        if (ri - 1 > 0)
        {
            low = KeyAt(p, ri - 1);
            hasLow = true;
        }
        if (ri + 1 < p.Count)
        {
            high = KeyAt(p, ri + 1);
            hasHigh = true;
        }
    }

    /// <summary>
    /// Gives touched node <paramref name="n"/>, which now holds keys in [<paramref name="low"/>, <paramref name="high"/>),
    /// the prefix those bounds share, and tags its index. <paramref name="indexCaptured"/>: the caller captured the
    /// index already (a rebuilt node).
    /// </summary>
    private void PrefixFromFences(Transaction tx, Node n, ReadOnlySpan<byte> low, bool hasLow, ReadOnlySpan<byte> high, bool hasHigh, bool indexCaptured)
    {
        int bits = hasLow && hasHigh ? CommonBits(low, high) : 0;
        SetPrefix(tx, n, low, bits, indexCaptured);
    }

    /// <summary>
    /// Sets touched node <paramref name="n"/>'s prefix to the first <paramref name="bits"/> bits of <paramref name="from"/>
    /// and recomputes every tag (the index is captured unless <paramref name="indexCaptured"/>).
    /// </summary>
    private void SetPrefix(Transaction tx, Node n, ReadOnlySpan<byte> from, int bits, bool indexCaptured)
    {
        Span<byte> pre = stackalloc byte[NodeHeader.PrefixLength];
        pre.Clear();
        int full = bits >> 3, rem = bits & 7;
        from[..full].CopyTo(pre);
        if (rem != 0) pre[full] = (byte)(from[full] & (0xFF00 >> rem));
        var have = new Span<byte>(n.Prefix, NodeHeader.PrefixLength);
        if (!pre.SequenceEqual(have) || n.PrefixBits != bits)
        {
            tx.Capture(n.Off + NodeHeader.PrefixOffset, NodeHeader.PrefixRegionLength);
            pre.CopyTo(have);
            n.H.PrefixBits = (byte)bits;
        }
        int count = n.Count;
        if (count == 0) return;
        if (!indexCaptured) tx.Capture(n.Off + NodeHeader.SizeOf, n.EntrySize * count);
        int first = n.IsLeaf ? 0 : 1;
        if (first == 1) n.SetTag(0, 0);
        for (int i = first; i < count; i++) n.SetTag(i, TagOf(KeyAt(n, i), bits));
    }

    /// <summary>
    /// A key about to go into touched node <paramref name="n"/> that does not begin with its prefix: shortens the
    /// prefix to what the key shares with it, and retags the node.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ShortenPrefix(Transaction tx, Node n, ReadOnlySpan<byte> key)
    {
        Span<byte> old = stackalloc byte[NodeHeader.PrefixLength];
        new ReadOnlySpan<byte>(n.Prefix, NodeHeader.PrefixLength).CopyTo(old);
        int bits = Math.Min(n.PrefixBits, CommonBits(old, key));
        _opShortened++;
        SetPrefix(tx, n, old, bits, indexCaptured: false);
    }

    /// <summary>The tag for <paramref name="key"/> going in at index <paramref name="i"/> of touched node <paramref name="n"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ushort TagForInsert(Transaction tx, Node n, int i, ReadOnlySpan<byte> key) =>
        !Tagged || (i == 0 && !n.IsLeaf) ? (ushort)0 : FittingTag(tx, n, key);

    /// <summary>The tag of compared key <paramref name="key"/> of touched node <paramref name="n"/>, shortening the node's prefix first if the key does not begin with it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ushort FittingTag(Transaction tx, Node n, ReadOnlySpan<byte> key)
    {
        if (n.PrefixBits != 0 && ComparePrefix(key, n.Prefix, n.PrefixBits) != 0) ShortenPrefix(tx, n, key);
        return TagOf(key, n.PrefixBits);
    }

    /// <summary>
    /// After an insert at index 0 of an internal node: the old record 0, now record 1, is compared from now
    /// on; give it its tag (its entry was captured by the index shift).
    /// </summary>
    private void TagSecond(Transaction tx, Node n) => n.SetTag(1, FittingTag(tx, n, KeyAt(n, 1)));

    private long _prefixShortened;
}
