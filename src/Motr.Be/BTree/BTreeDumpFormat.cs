namespace Motr.Be.BTree;

// The dump file written by BTreeDump.SaveAsync and read by BTreeDump.LoadAsync (r.btree.tools.save/load).
// Portable: little-endian, no padding, read and written field by field (BinaryPrimitives), so the file
// does not depend on the host's struct layout. Offsets below are from the start of each part.
//
//   [0, 256)                 file header
//   [256, ...)               blocks, each: 16-byte block header, then its records
//   [end - 32, end)          trailer
//
// A record inside a block: [u32 key length][u32 value length][key][value], no padding, records in
// strictly increasing key order (by the comparer named in the header) within and across blocks.
// Every part is covered by a CRC32C; see docs/btree-tools.md.

/// <summary>Magic numbers, version and limits of the b+tree dump format (<see cref="BTreeDump"/>).</summary>
public static class BTreeDumpFormat
{
    /// <summary>"MOTRBTSV" read as a little-endian u64: the file header's magic.</summary>
    public const ulong FileMagic = 0x5653544252544F4DUL;

    /// <summary>"MOTRBTEN" read as a little-endian u64: the trailer's magic.</summary>
    public const ulong TrailerMagic = 0x4E45544252544F4DUL;

    /// <summary>"BTBK" read as a little-endian u32: every block header's magic.</summary>
    public const uint BlockMagic = 0x4B425442;

    /// <summary>Format version this build writes and reads.</summary>
    public const ushort Version = 1;

    /// <summary>Bytes of the file header.</summary>
    public const int HeaderSize = FileHeaderLayout.Size;

    /// <summary>Bytes of a block header.</summary>
    public const int BlockHeaderSize = BlockHeaderLayout.Size;

    /// <summary>Bytes of the trailer.</summary>
    public const int TrailerSize = TrailerLayout.Size;

    /// <summary>Bytes of record data after which the writer ends a block (a larger record gets a block of its own).</summary>
    public const int TargetBlockBytes = 256 << 10;

    /// <summary>Bytes of the length fields in front of every record.</summary>
    public const int RecordPrefix = 8;

    /// <summary>
    /// Largest block payload a reader accepts: a full block plus one record of the largest key and value.
    /// A larger length field is damage (and is refused before anything is allocated for it).
    /// </summary>
    public const int MaxBlockBytes = TargetBlockBytes + RecordPrefix + BTreeFormatConstants.MaxKeyLength + BTreeFormatConstants.MaxValueLength;

    /// <summary>Longest comparer name the header holds (UTF-8 bytes).</summary>
    public const int MaxComparerName = FileHeaderLayout.ComparerNameLength;
}

/// <summary>Field offsets of the 256-byte file header (all little-endian).</summary>
internal static class FileHeaderLayout
{
    public const int Size = 256;
    /// <summary>[0, u64] <see cref="BTreeDumpFormat.FileMagic"/> ("MOTRBTSV").</summary>
    public const int Magic = 0;
    /// <summary>[8, u16] format version (<see cref="BTreeDumpFormat.Version"/>).</summary>
    public const int Version = 8;
    /// <summary>[10, u16] header size in bytes (256).</summary>
    public const int HeaderSize = 10;
    /// <summary>[12, u32] file flags: none defined in version 1; a reader refuses bits it does not know.</summary>
    public const int Flags = 12;
    /// <summary>[16, u8] leaf format of the source tree (<see cref="NodeFormat"/>).</summary>
    public const int LeafFormat = 16;
    /// <summary>[17, u8] tree flags: 1 = the source tree keeps record checksums.</summary>
    public const int TreeFlags = 17;
    /// <summary>[18, u16] length of the comparer name in bytes (1 to 128).</summary>
    public const int ComparerNameLen = 18;
    /// <summary>[20, i32] fixed key size, -1 for variable keys.</summary>
    public const int KeySize = 20;
    /// <summary>[24, i32] fixed value size, -1 for variable values.</summary>
    public const int ValueSize = 24;
    /// <summary>[28, u32] size of the source tree's new leaves.</summary>
    public const int LeafNodeSize = 28;
    /// <summary>[32, u32] size of the source tree's new internal nodes.</summary>
    public const int InternalNodeSize = 32;
    /// <summary>[36, u32] reserved, zero.</summary>
    public const int Reserved0 = 36;
    /// <summary>[40, i64] records in the tree when the save began; -1 if unknown. A hint: the trailer's count is what was written.</summary>
    public const int RecordCountHint = 40;
    /// <summary>[48, u64] id of the segment the tree was saved from.</summary>
    public const int SourceSegment = 48;
    /// <summary>[56, i64] offset of the saved tree's header in that segment.</summary>
    public const int SourceTree = 56;
    /// <summary>[64, i64] when the save began, Unix milliseconds (UTC).</summary>
    public const int CreatedUnixMs = 64;
    /// <summary>[72, u32] the writer's target block size in bytes (informative).</summary>
    public const int TargetBlockBytes = 72;
    // [76, 96) reserved, zero.
    /// <summary>[96, u8[128]] comparer name, UTF-8, zero padded.</summary>
    public const int ComparerName = 96;
    public const int ComparerNameLength = 128;
    // [224, 252) reserved, zero.
    /// <summary>[252, u32] CRC32C of bytes [0, 252).</summary>
    public const int Crc = 252;
}

/// <summary>Field offsets of the 16-byte header in front of every block of records.</summary>
internal static class BlockHeaderLayout
{
    public const int Size = 16;
    /// <summary>[0, u32] <see cref="BTreeDumpFormat.BlockMagic"/> ("BTBK").</summary>
    public const int Magic = 0;
    /// <summary>[4, u32] bytes of records following this header (the payload).</summary>
    public const int PayloadLength = 4;
    /// <summary>[8, u32] records in the block (at least 1).</summary>
    public const int RecordCount = 8;
    /// <summary>[12, u32] CRC32C of header bytes [4, 12) followed by the payload.</summary>
    public const int Crc = 12;
}

/// <summary>Field offsets of the 32-byte trailer that ends the file.</summary>
internal static class TrailerLayout
{
    public const int Size = 32;
    /// <summary>[0, u64] <see cref="BTreeDumpFormat.TrailerMagic"/> ("MOTRBTEN").</summary>
    public const int Magic = 0;
    /// <summary>[8, i64] records written (the sum of the blocks' counts).</summary>
    public const int TotalRecords = 8;
    /// <summary>[16, i64] blocks written.</summary>
    public const int BlockCount = 16;
    /// <summary>[24, u32] CRC32C over every block's CRC (each as a little-endian u32), in file order.</summary>
    public const int BlocksCrc = 24;
    /// <summary>[28, u32] CRC32C of bytes [0, 28).</summary>
    public const int Crc = 28;
}
