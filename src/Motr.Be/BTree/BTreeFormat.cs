using System.Runtime.InteropServices;

namespace Motr.Be.BTree;

/// <summary>How the records of a node are encoded. Nodes of different formats coexist in one tree.</summary>
public enum NodeFormat : byte
{
    /// <summary>Fixed-size keys and values: a record is the key then the value, no lengths stored.</summary>
    FixedKeyValue = 1,
    /// <summary>Fixed-size keys, variable-size values: a record is the value length, the key, then the value.</summary>
    FixedKey = 2,
    /// <summary>Variable-size keys and values: a record is both lengths, the key, then the value.</summary>
    Variable = 3,
}

/// <summary>Outcome of a b+tree operation that can expectedly not happen (no exceptions on hot paths).</summary>
public enum BTreeStatus
{
    /// <summary>Done.</summary>
    Ok,
    /// <summary>The key is not in the tree.</summary>
    NotFound,
    /// <summary>Insert: the key is already in the tree (nothing changed).</summary>
    Exists,
    /// <summary>The segment has no space left for a node or an out-of-node chunk, and may not grow (nothing changed).</summary>
    OutOfSpace,
}

// A node (NodeSize bytes, 64-byte aligned, from the segment's allocator):
//   [0, 64)                 NodeHeader
//   [64, 64 + E * Count)    index: one entry per record, in key order (E = 4 in leaves, 8 in internal nodes):
//                             [0, u16] record offset / 8
//                             [2, u16] key tag: the 16 bits of the key after the node's prefix (bytewise trees)
//                             [4, u32] internal nodes: the child's offset / 64, a copy of the record's, so a
//                                      descent reads no record line unless tags tie
//   ...                     free space
//   [HeapTop, Size)         record heap (records 8-aligned, in any order), with holes linked from FirstHole
// A hole (freed record space, >= 8 bytes): [0, u16] next hole offset / 8 (0: none), [2, u16] size / 8.
//
// Records (then padded to 8; a u32 CRC32C of the record's preceding bytes at the end when the node's
// RecordChecksums flag is set):
//   FixedKeyValue   key[K] value[V]
//   FixedKey        [u32 vlen] key[K] value
//   Variable        [u32 klen] [u32 vlen] key value
// A length with bit 31 set means the part lives out of node: its in-node bytes are a LargeRef.
// In internal nodes the value is the 8-byte offset of the child; record 0 holds no key (empty, or zeros
// where keys have a fixed size): it stands for "everything below the next key". Version 2 kept a copy of
// the separator above the node there, which went stale when the node took over a freed sibling's range.
//
// Key prefix and tags (bytewise trees; a tree with its own comparer keeps both zero). Every compared key
// of a node begins with the header's PrefixBits-bit prefix (at most 120 bits), and its index entry holds
// its tag: bits [PrefixBits, PrefixBits + 16) of the key, zeros past its end (internal record 0: tag 0).
// Tags rise with keys, so a search narrows by tags on the index lines alone and reads a record only
// where tags are equal: one record line instead of one per probe. A node's prefix is the common prefix
// of the separators around it, set at split, merge and rebalance, so keys routed to the node share it;
// one that does not (the root after it shrank, a sibling that took over a freed child's range) shortens
// it and the node is retagged.

/// <summary>Header of a b+tree node.</summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
internal struct NodeHeader
{
    public const int SizeOf = 64;
    /// <summary>[0, u32] <see cref="BTreeFormatConstants.NodeMagic"/>.</summary>
    [FieldOffset(0)] public uint Magic;
    /// <summary>[4, u8] node format version.</summary>
    [FieldOffset(4)] public byte Version;
    /// <summary>[5, u8] <see cref="NodeFormat"/>.</summary>
    [FieldOffset(5)] public byte Format;
    /// <summary>[6, u8] level: 0 for leaves.</summary>
    [FieldOffset(6)] public byte Level;
    /// <summary>[7, u8] flags: 1 = records carry a CRC32C.</summary>
    [FieldOffset(7)] public byte Flags;
    /// <summary>[8, u32] node size in bytes.</summary>
    [FieldOffset(8)] public uint Size;
    /// <summary>[12, u16] key size of fixed-key formats.</summary>
    [FieldOffset(12)] public ushort KeySize;
    /// <summary>[14, u16] value size of <see cref="NodeFormat.FixedKeyValue"/>.</summary>
    [FieldOffset(14)] public ushort ValueSize;
    /// <summary>[16, i64] offset of the tree header this node belongs to.</summary>
    [FieldOffset(16)] public long Tree;
    /// <summary>[24, 15 bytes] the key prefix every compared key of the node begins with: its first <see cref="PrefixBits"/> bits, zeros after.</summary>
    [FieldOffset(24)] public ulong Prefix0;
    /// <summary>[32, 7 bytes] the rest of the prefix (this field holds its first four).</summary>
    [FieldOffset(32)] public uint Prefix1;
    /// <summary>[39, u8] length in bits of the key prefix (0 to 120); changes with the prefix, not with every operation.</summary>
    [FieldOffset(39)] public byte PrefixBits;
    // The fields every change touches, and the checksum, sit together at the end of the header, next to
    // the index: one small captured region, which a short index shift joins.
    /// <summary>[40, u16] number of records.</summary>
    [FieldOffset(40)] public ushort Count;
    /// <summary>[42, u16] offset / 8 of the first hole (0: none).</summary>
    [FieldOffset(42)] public ushort FirstHole;
    /// <summary>[44, u32] lowest byte of the record heap.</summary>
    [FieldOffset(44)] public uint HeapTop;
    /// <summary>[48, u32] bytes in holes.</summary>
    [FieldOffset(48)] public uint HoleBytes;
    /// <summary>[52, u32] changes made to the node (cookies use it).</summary>
    [FieldOffset(52)] public uint Seq;
    /// <summary>[56, u32] reserved, zero.</summary>
    [FieldOffset(56)] public uint Reserved2;
    /// <summary>[60, u32] CRC32C of the node without this field, recomputed when the group is sealed.</summary>
    [FieldOffset(60)] public uint Crc;

    /// <summary>The header bytes an operation changes: Count .. Seq.</summary>
    public const int MutableOffset = 40, MutableLength = 56 - 40;
    public const int CrcOffset = 60;
    /// <summary>Where the prefix bytes sit and how many there can be; the region a new prefix captures (bytes and length).</summary>
    public const int PrefixOffset = 24, PrefixLength = 15, PrefixRegionLength = 16;
    /// <summary>Bytes per index entry in a leaf and in an internal node (which also keeps the child there).</summary>
    public const int LeafEntrySize = 4, InternalEntrySize = 8;
}

/// <summary>The tree header: an allocator chunk the caller keeps the offset of (e.g. as a named root).</summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
internal struct TreeHeader
{
    public const int SizeOf = 128;
    /// <summary>[0, u32] <see cref="BTreeFormatConstants.TreeMagic"/>.</summary>
    [FieldOffset(0)] public uint Magic;
    /// <summary>[4, u16] tree format version.</summary>
    [FieldOffset(4)] public ushort Version;
    /// <summary>[6, u8] format of the leaves.</summary>
    [FieldOffset(6)] public byte LeafFormat;
    /// <summary>[7, u8] flags: 1 = record checksums.</summary>
    [FieldOffset(7)] public byte Flags;
    /// <summary>[8, i64] root node.</summary>
    [FieldOffset(8)] public long Root;
    /// <summary>[16, u32] size of new leaves.</summary>
    [FieldOffset(16)] public uint LeafSize;
    /// <summary>[20, u32] size of new internal nodes.</summary>
    [FieldOffset(20)] public uint InternalSize;
    /// <summary>[24, i32] key size, -1 for variable.</summary>
    [FieldOffset(24)] public int KeySize;
    /// <summary>[28, i32] value size, -1 for variable.</summary>
    [FieldOffset(28)] public int ValueSize;
    /// <summary>[32, u32] height: 1 when the root is a leaf.</summary>
    [FieldOffset(32)] public uint Height;
    /// <summary>[36, u32] CRC32C of the comparer's name (0: bytewise).</summary>
    [FieldOffset(36)] public uint ComparerId;
    /// <summary>[40, i64] records.</summary>
    [FieldOffset(40)] public long Count;
    /// <summary>[48, i64] nodes.</summary>
    [FieldOffset(48)] public long Nodes;
    /// <summary>[56, i64] out-of-node chunks (keys, values, separators).</summary>
    [FieldOffset(56)] public long LargeChunks;
    /// <summary>[64, i64] bytes in out-of-node chunks.</summary>
    [FieldOffset(64)] public long LargeBytes;
    /// <summary>[72, u32] largest record kept in a node; set at creation from the smallest node size allowed, so four fit any node.</summary>
    [FieldOffset(72)] public uint InlineLimit;
    /// <summary>[76, u32] longest key ever inserted (delete credits are sized by it).</summary>
    [FieldOffset(76)] public uint MaxKeyLength;
    /// <summary>[80, u32] largest node size in the tree (credits are sized by it).</summary>
    [FieldOffset(80)] public uint LargestNode;
    /// <summary>
    /// [84, u64] a random nonzero stamp set at creation, never changed: a <see cref="BTree"/> object compares it at every
    /// operation, so one kept past its tree's destruction is never taken for a tree made later at the same place.
    /// 0 in headers made before the field existed.
    /// </summary>
    [FieldOffset(84)] public ulong Birth;
    /// <summary>
    /// [92, u64] nodes freed over the tree's life. A cookie keeps it (with <see cref="Birth"/>) and is refused once it
    /// changed: a freed leaf's block may come back as anything, even a byte-exact copy of a node of this tree.
    /// Captured on its own by the operations that free a node, so the ones that do not log no more.
    /// </summary>
    [FieldOffset(92)] public ulong NodeFrees;
    // [100, 124) reserved, zero.
    /// <summary>[124, u32] CRC32C of the header without this field, recomputed when the group is sealed.</summary>
    [FieldOffset(124)] public uint Crc;

    /// <summary>The fields operations change: Root .. MaxKeyLength (a few set once sit in between).</summary>
    public const int MutableOffset = 8, MutableLength = 84 - 8;
    public const int NodeFreesOffset = 92;
    public const int CrcOffset = 124;
}

/// <summary>In-node reference to a key or value stored out of node.</summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
internal struct LargeRef
{
    public const int SizeOf = 16;
    /// <summary>[0, i64] allocator chunk holding the bytes.</summary>
    [FieldOffset(0)] public long Chunk;
    /// <summary>[8, u32] CRC32C of the bytes.</summary>
    [FieldOffset(8)] public uint Crc;
    /// <summary>[12, u32] reserved, zero.</summary>
    [FieldOffset(12)] public uint Reserved;
}

/// <summary>Magic numbers, versions and limits of the b+tree formats.</summary>
public static class BTreeFormatConstants
{
    /// <summary>"BTND" — node magic.</summary>
    public const uint NodeMagic = 0x444E5442;
    /// <summary>"BTRE" — tree header magic.</summary>
    public const uint TreeMagic = 0x45525442;
    /// <summary>Node format version (2: index entries carry key tags, the header a key prefix; 3: an internal node's record 0 holds no key).</summary>
    public const byte NodeVersion = 3;
    /// <summary>Tree header version.</summary>
    public const ushort TreeVersion = 1;
    /// <summary>Smallest node size.</summary>
    public const int MinNodeSize = 512;
    /// <summary>Largest node size.</summary>
    public const int MaxNodeSize = 64 * 1024;
    /// <summary>Longest key: 1 MiB.</summary>
    public const int MaxKeyLength = 1 << 20;
    /// <summary>Longest value: 64 MiB.</summary>
    public const int MaxValueLength = 64 << 20;
    /// <summary>Bit of a stored length that marks an out-of-node part.</summary>
    internal const uint LargeFlag = 0x8000_0000;
    /// <summary>Flag: records carry a CRC32C.</summary>
    internal const byte RecordChecksumFlag = 1;
    /// <summary>Deepest tree: with at least 4 records per node this is far beyond any segment.</summary>
    internal const int MaxHeight = 32;
}
