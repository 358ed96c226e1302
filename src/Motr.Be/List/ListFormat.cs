using System.Runtime.InteropServices;

namespace Motr.Be.List;

/// <summary>
/// Magics, version and sizes of the persistent list's on-disk format (see <c>docs/list.md</c>).
/// Magics read as ASCII in a little-endian hex dump.
/// </summary>
public static class ListFormat
{
    /// <summary>"MOTRLSTH" — magic of a live <see cref="ListHead"/>.</summary>
    public const ulong HeadMagic = 0x4854534C52544F4DUL;

    /// <summary>"MOTRLINK" — magic of a <see cref="ListLink"/> whose element is on a list.</summary>
    public const ulong LinkedMagic = 0x4B4E494C52544F4DUL;

    /// <summary>"MOTRUNLK" — magic a <see cref="ListLink"/> gets when its element is deleted from a list.</summary>
    public const ulong UnlinkedMagic = 0x4B4C4E5552544F4DUL;

    /// <summary>List format version written by this build.</summary>
    public const uint Version = 1;

    /// <summary>Alignment required of a list head and of every link (both hold 64-bit fields).</summary>
    public const int Alignment = 8;

    /// <summary>Lowest offset a head or a link may have: page 0 is the segment header.</summary>
    public const long MinOffset = BeConstants.PageSize;
}

/// <summary>
/// The head of a persistent list, stored in the segment at an offset the user chooses (8-byte aligned,
/// outside page 0). <see cref="First"/>, <see cref="Count"/> and <see cref="Last"/> are adjacent in this
/// order, so whatever an insertion or deletion changes in the head is one contiguous region
/// (First+Count at the front, Count+Last at the back, Count alone in the middle, all three when the
/// list becomes or stops being empty).
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
public struct ListHead
{
    /// <summary>Bytes of a head.</summary>
    public const int SizeOf = 48;

    /// <summary>[0, u64] <see cref="ListFormat.HeadMagic"/> while the list exists; anything else is no list.</summary>
    [FieldOffset(0)] public ulong Magic;
    /// <summary>[8, u32] format version (<see cref="ListFormat.Version"/>).</summary>
    [FieldOffset(8)] public uint Version;
    /// <summary>[12, u32] flags, none defined yet (zero).</summary>
    [FieldOffset(12)] public uint Flags;
    /// <summary>[16, i64] offset of the first element (0: empty list).</summary>
    [FieldOffset(16)] public long First;
    /// <summary>[24, i64] number of elements.</summary>
    [FieldOffset(24)] public long Count;
    /// <summary>[32, i64] offset of the last element (0: empty list).</summary>
    [FieldOffset(32)] public long Last;
    /// <summary>[40, u32] reserved, zero.</summary>
    [FieldOffset(40)] public uint Reserved;
    /// <summary>[44, u32] CRC32C of the head without this field, recomputed when the group is sealed.</summary>
    [FieldOffset(44)] public uint Crc;

    /// <summary>Offset of <see cref="Crc"/> in the head.</summary>
    public const int CrcOffset = 44;

    /// <summary>Offset of <see cref="First"/> in the head.</summary>
    public const int FirstOffset = 16;
    /// <summary>Offset of <see cref="Count"/> in the head.</summary>
    public const int CountOffset = 24;
    /// <summary>Offset of <see cref="Last"/> in the head.</summary>
    public const int LastOffset = 32;
}

/// <summary>
/// The link embedded in every list element, at the same offset in every element of a list (the
/// list's link offset): element offset + link offset = link offset in the segment. Neighbours are
/// stored as element offsets (0: none). <see cref="Owner"/> and <see cref="Magic"/> make a stray
/// offset, an element of another list, or one not on any list detectable in O(1).
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = SizeOf)]
public struct ListLink
{
    /// <summary>Bytes of a link.</summary>
    public const int SizeOf = 32;

    /// <summary>[0, i64] offset of the next element (0: this is the last).</summary>
    [FieldOffset(0)] public long Next;
    /// <summary>[8, i64] offset of the previous element (0: this is the first).</summary>
    [FieldOffset(8)] public long Prev;
    /// <summary>[16, i64] offset of the head of the list the element is on (meaningful while linked).</summary>
    [FieldOffset(16)] public long Owner;
    /// <summary>[24, u64] <see cref="ListFormat.LinkedMagic"/> while on a list, <see cref="ListFormat.UnlinkedMagic"/> after deletion; anything else: never linked.</summary>
    [FieldOffset(24)] public ulong Magic;

    /// <summary>Offset of <see cref="Next"/> in the link.</summary>
    public const int NextOffset = 0;
    /// <summary>Offset of <see cref="Prev"/> in the link.</summary>
    public const int PrevOffset = 8;
    /// <summary>Offset of <see cref="Owner"/> in the link.</summary>
    public const int OwnerOffset = 16;
    /// <summary>Offset of <see cref="Magic"/> in the link.</summary>
    public const int MagicOffset = 24;
}
