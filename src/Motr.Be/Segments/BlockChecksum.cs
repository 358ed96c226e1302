using System.Buffers.Binary;

namespace Motr.Be.Segments;

/// <summary>
/// The CRC32C convention of every checksummed block in a segment: the checksum of the block's bytes
/// with its own 4-byte CRC field left out, stored little-endian in that field.
/// </summary>
public static class BlockChecksum
{
    /// <summary>The checksum of <paramref name="block"/> excluding the field at <paramref name="crcOffset"/>.</summary>
    public static uint Compute(ReadOnlySpan<byte> block, int crcOffset) =>
        ~Crc32C.Append(Crc32C.Append(~0u, block[..crcOffset]), block[(crcOffset + 4)..]);

    /// <summary>Computes and stores the checksum of <paramref name="block"/>.</summary>
    public static void Seal(Span<byte> block, int crcOffset) =>
        BinaryPrimitives.WriteUInt32LittleEndian(block[crcOffset..], Compute(block, crcOffset));

    /// <summary>Whether the stored checksum matches the block.</summary>
    public static bool Verify(ReadOnlySpan<byte> block, int crcOffset) =>
        BinaryPrimitives.ReadUInt32LittleEndian(block[crcOffset..]) == Compute(block, crcOffset);
}
