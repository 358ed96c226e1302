namespace Motr.Be.BTree;

/// <summary>
/// How a new b+tree is shaped. Fixed <see cref="KeySize"/> and <see cref="ValueSize"/> select the
/// <see cref="NodeFormat.FixedKeyValue"/> leaf format, a fixed key alone <see cref="NodeFormat.FixedKey"/>,
/// otherwise <see cref="NodeFormat.Variable"/>.
/// </summary>
public sealed record BTreeConfig
{
    /// <summary>Size of leaf nodes: a power of two from 512 to 65536 (default 4096).</summary>
    public int NodeSize { get; init; } = 4096;

    /// <summary>Size of internal nodes (default: <see cref="NodeSize"/>).</summary>
    public int? InternalNodeSize { get; init; }

    /// <summary>Key size in bytes for fixed-size keys; null for variable keys (1 byte to 1 MiB).</summary>
    public int? KeySize { get; init; }

    /// <summary>Value size in bytes for fixed-size values (needs <see cref="KeySize"/>); null for variable values (0 to 64 MiB).</summary>
    public int? ValueSize { get; init; }

    /// <summary>Store a CRC32C with every record, checked on every read of it and by fsck.</summary>
    public bool RecordChecksums { get; init; }

    /// <summary>Key order; null for bytewise (unsigned lexicographic).</summary>
    public IKeyComparer? Comparer { get; init; }

    internal NodeFormat LeafFormat => KeySize is null ? NodeFormat.Variable : ValueSize is null ? NodeFormat.FixedKey : NodeFormat.FixedKeyValue;
}

/// <summary>
/// The order of keys in a tree. The tree records a hash of <see cref="Name"/> and refuses to open
/// with a different comparer. Compare must be a total order and consistent with equality of bytes.
/// </summary>
public interface IKeyComparer
{
    /// <summary>A stable name (e.g. "bytewise", "u64-big-endian"): part of the tree's format.</summary>
    string Name { get; }

    /// <summary>Negative, zero or positive as <paramref name="a"/> sorts before, with, or after <paramref name="b"/>.</summary>
    int Compare(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b);
}

/// <summary>Unsigned lexicographic order of bytes, shorter first on a common prefix (the default).</summary>
public sealed class BytewiseComparer : IKeyComparer
{
    /// <summary>The one instance.</summary>
    public static readonly BytewiseComparer Instance = new();

    /// <inheritdoc />
    public string Name => "bytewise";

    /// <inheritdoc />
    public int Compare(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b) => a.SequenceCompareTo(b);
}
