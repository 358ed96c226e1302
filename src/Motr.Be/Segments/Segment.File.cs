using System.Runtime.InteropServices;
using Motr.Be.Storage;

namespace Motr.Be.Segments;

public sealed unsafe partial class Segment
{
    /// <summary>
    /// Writes a new segment file: header, zeroed space, synced, then renamed into place so a crash
    /// never leaves a half-made segment under the real name.
    /// </summary>
    internal static void CreateFile(IStorage storage, ulong id, ulong domainId, long size, long maxSize)
    {
        if (size < 2 * BeConstants.PageSize || size % BeConstants.PageSize != 0)
            throw new ArgumentOutOfRangeException(nameof(size), $"segment size {size} must be a multiple of {BeConstants.PageSize} and at least two pages");
        if (maxSize < size || maxSize % BeConstants.PageSize != 0 || maxSize > BeConstants.MaxSegmentSize)
            throw new ArgumentOutOfRangeException(nameof(maxSize), $"segment growth limit {maxSize} must be a page multiple, at least the size {size} and at most {BeConstants.MaxSegmentSize} (8 TiB)");
        var page = new byte[SegmentHeader.SizeOf];
        ref SegmentHeader h = ref MemoryMarshal.AsRef<SegmentHeader>(page.AsSpan());
        h.Magic = BeConstants.SegmentMagic;
        h.Version = BeConstants.SegmentVersion;
        h.SegmentId = id;
        h.DomainId = domainId;
        h.PageSize = BeConstants.PageSize;
        h.HeaderSize = SegmentHeader.SizeOf;
        h.CreatedUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        h.MaxSize = maxSize;
        h.StaticCrc = Crc32C.Compute(page.AsSpan(0, 60));
        h.Size = size;
        SealGeometry(page);
        Alloc.Allocator.FormatNew(page, size);
        SealNewRoots(page);

        string name = BeConstants.SegmentFileName(id);
        string tmp = name + ".new";
        storage.Delete(tmp);
        using (var f = storage.Open(tmp, StorageOpenMode.CreateNew))
        {
            f.Write(0, page);
            f.SetLength(size);
            f.Flush();
        }
        storage.Rename(tmp, name);
    }

    /// <summary>Whether a segment file is one that creation wrote and no transaction ever changed (a valid header with tx watermark 0).</summary>
    internal static bool IsUnused(IStorage storage, string name)
    {
        using var f = storage.Open(name, StorageOpenMode.OpenExisting, StorageAccess.ReadOnly);
        var page = new byte[SegmentHeader.SizeOf];
        if (f.Read(0, page) < page.Length) return false;
        var h = MemoryMarshal.Read<SegmentHeader>(page);
        return h.Magic == BeConstants.SegmentMagic && h.StaticCrc == Crc32C.Compute(page.AsSpan(0, 60))
            && BlockChecksum.Verify(page.AsSpan(SegmentHeader.GeometryOffset, SegmentHeader.GeometryLength), SegmentHeader.GeometryLength - 4)
            && h.LastTxId == 0 && h.LastGroupSeq == 0;
    }

    internal static void SealGeometry(Span<byte> headerPage) =>
        BlockChecksum.Seal(headerPage.Slice(SegmentHeader.GeometryOffset, SegmentHeader.GeometryLength), SegmentHeader.GeometryLength - 4);

    /// <summary>
    /// Reads and validates a segment file's header and loads its image. Recovery then replays the log into it. The file
    /// is only read, so it is opened <see cref="StorageAccess.ReadOnly"/> (the placer opens it for writing).
    /// </summary>
    internal static Segment Load(IStorage storage, string name, ulong expectedDomainId, Domain domain)
    {
        using var f = storage.Open(name, StorageOpenMode.OpenExisting, StorageAccess.ReadOnly);
        string where = $"{storage.Location}/{name}";
        long length = f.Length;
        if (length < SegmentHeader.SizeOf)
            throw new BeCorruptionException(where, length, $"segment file is truncated: {length} bytes, shorter than its {SegmentHeader.SizeOf}-byte header");
        var page = new byte[SegmentHeader.SizeOf];
        f.Read(0, page);
        var h = MemoryMarshal.Read<SegmentHeader>(page);
        if (h.Magic != BeConstants.SegmentMagic)
            throw new BeCorruptionException(where, 0, $"not a Motr segment: magic 0x{h.Magic:X16}, expected 0x{BeConstants.SegmentMagic:X16}");
        if (h.Version != BeConstants.SegmentVersion)
            throw new BeCorruptionException(where, 8, $"segment format version {h.Version} is not supported; this build reads version {BeConstants.SegmentVersion}");
        uint crc = Crc32C.Compute(page.AsSpan(0, 60));
        if (h.StaticCrc != crc)
            throw new BeCorruptionException(where, 60, $"segment header checksum mismatch (stored 0x{h.StaticCrc:X8}, computed 0x{crc:X8})");
        if (!BlockChecksum.Verify(page.AsSpan(SegmentHeader.GeometryOffset, SegmentHeader.GeometryLength), SegmentHeader.GeometryLength - 4))
            throw new BeCorruptionException(where, SegmentHeader.GeometryOffset, "segment geometry block checksum mismatch");
        if (h.DomainId != expectedDomainId)
            throw new BeCorruptionException(where, 24, $"segment belongs to domain {h.DomainId:X16}, not to this domain {expectedDomainId:X16}");
        if (h.PageSize != BeConstants.PageSize || h.HeaderSize != SegmentHeader.SizeOf || h.Size < 2 * BeConstants.PageSize
            || h.Size % BeConstants.PageSize != 0 || h.MaxSize < h.Size || h.MaxSize % BeConstants.PageSize != 0 || h.MaxSize > BeConstants.MaxSegmentSize)
            throw new BeCorruptionException(where, 32, $"segment geometry is invalid (page {h.PageSize}, header {h.HeaderSize}, size {h.Size}, max {h.MaxSize})");
        if (name != BeConstants.SegmentFileName(h.SegmentId))
            throw new BeCorruptionException(where, 16, $"segment id {h.SegmentId} does not match the file name");
        // The placer makes a file's growth durable before it writes a header with the larger size,
        // so a file shorter than its header's size was truncated after the fact.
        if (length < h.Size)
            throw new BeCorruptionException(where, length, $"segment file is truncated: {length} bytes, but its header says the segment is {h.Size} bytes");

        var mem = new SegmentMemory(h.MaxSize, h.Size);
        try
        {
            // Holes of the file (space a new segment has never used) are skipped: fresh memory is zero already.
            long loaded = f.ReadData(h.Size, mem.Base);
            if (loaded < h.Size) throw new BeCorruptionException(where, loaded, "segment file ended while loading");
            mem.Populate();
            return new Segment(h.SegmentId, name, mem, domain);
        }
        catch
        {
            mem.Dispose();
            throw;
        }
    }

    /// <summary>Checks every checksummed block of the header once recovery has replayed the log.</summary>
    internal void VerifyHeaderBlocks(string where)
    {
        if (!BlockChecksum.Verify(Bytes(SegmentHeader.GeometryOffset, SegmentHeader.GeometryLength), SegmentHeader.GeometryLength - 4))
            throw new BeCorruptionException(where, SegmentHeader.GeometryOffset, "segment geometry block checksum mismatch after recovery");
        if (!RootsChecksumValid())
            throw new BeCorruptionException(where, SegmentHeader.RootsOffset, "segment dictionary (roots) checksum mismatch");
        if (!BlockChecksum.Verify(Bytes(SegmentHeader.AllocatorOffset, SegmentHeader.AllocatorLength), SegmentHeader.AllocatorCrcOffset))
            throw new BeCorruptionException(where, SegmentHeader.AllocatorOffset, "allocator state checksum mismatch");
    }
}
