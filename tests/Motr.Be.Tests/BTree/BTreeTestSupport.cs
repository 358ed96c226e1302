using Motr.Be.BTree;

namespace Motr.Be.Tests.BTree;

/// <summary>
/// Bytewise order for the model (unsigned lexicographic, shorter first), as the tree's default comparer;
/// and the matching equality, for sets and dictionaries of keys.
/// </summary>
public sealed class ByteArrayComparer : IComparer<byte[]>, IEqualityComparer<byte[]>
{
    public static readonly ByteArrayComparer Instance = new();
    public int Compare(byte[]? a, byte[]? b) => a.AsSpan().SequenceCompareTo(b);
    public bool Equals(byte[]? a, byte[]? b) => a.AsSpan().SequenceEqual(b);
    public int GetHashCode(byte[] a)
    {
        var hc = new HashCode();
        hc.AddBytes(a);
        return hc.ToHashCode();
    }
}

/// <summary>Key/value shapes for the three leaf formats, with some large parts for small nodes.</summary>
public sealed record TreeShape(string Name, BTreeConfig Config, Func<Random, int> KeyLength, Func<Random, int> ValueLength)
{
    public static TreeShape Of(string format, int nodeSize) => format switch
    {
        "fkv" => new(format, new BTreeConfig { NodeSize = nodeSize, KeySize = 8, ValueSize = 16 }, _ => 8, _ => 16),
        "fk" => new(format, new BTreeConfig { NodeSize = nodeSize, KeySize = 8 }, _ => 8,
            r => r.Next(10) == 0 ? r.Next(200, 3000) : r.Next(0, 120)),
        "var" => new(format, new BTreeConfig { NodeSize = nodeSize }, r => r.Next(20) == 0 ? r.Next(100, 600) : r.Next(1, 24),
            r => r.Next(10) == 0 ? r.Next(200, 3000) : r.Next(0, 120)),
        "var-crc" => new(format, new BTreeConfig { NodeSize = nodeSize, RecordChecksums = true }, r => r.Next(1, 24),
            r => r.Next(10) == 0 ? r.Next(200, 1500) : r.Next(0, 80)),
        // Keys and values about the inline limit: records that move parts in and out of node as they are updated
        // (key in node or out, value in node or out), at and around the sizes where the layout changes.
        "var-edge" => new(format, new BTreeConfig { NodeSize = nodeSize }, r => Motr.Be.BTree.BTree.MaxInline(nodeSize) - r.Next(-8, 48),
            r => r.Next(10) switch { 0 => r.Next(200, 3000), < 4 => r.Next(0, 32), _ => r.Next(0, Motr.Be.BTree.BTree.MaxInline(nodeSize)) }),
        _ => throw new ArgumentException(format),
    };

    /// <summary>A key from a small space (so that operations hit existing keys), of this shape's length.</summary>
    public byte[] Key(Random r, int space)
    {
        int id = r.Next(space);
        var rk = new Random(id * 7919 + 1);
        var k = new byte[KeyLength(rk)];
        rk.NextBytes(k);
        return k;
    }

    public byte[] Value(Random r)
    {
        var v = new byte[ValueLength(r)];
        r.NextBytes(v);
        return v;
    }
}
