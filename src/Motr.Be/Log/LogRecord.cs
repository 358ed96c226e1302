using System.Runtime.InteropServices;

namespace Motr.Be.Log;

/// <summary>Validation and parsing of log records and their group chunks (shared by the placer and recovery).</summary>
internal static class LogRecord
{
    public static uint HeaderCrc(ReadOnlySpan<byte> header) => Crc32C.Compute(header[..60]);

    /// <summary>Whether <paramref name="header"/> is an intact record header of this domain; null if so, else what is wrong.</summary>
    public static string? CheckHeader(ReadOnlySpan<byte> header, ulong domainId, long areaSize, out RecordHeader h)
    {
        h = MemoryMarshal.Read<RecordHeader>(header);
        if (h.Magic != BeConstants.LogRecordMagic) return "no record header (magic mismatch)";
        if (h.HeaderCrc != HeaderCrc(header)) return "record header checksum mismatch";
        if (h.Version < BeConstants.MinLogVersion || h.Version > BeConstants.LogVersion)
            return $"record format version {h.Version} is not supported (this build reads {BeConstants.MinLogVersion} to {BeConstants.LogVersion})";
        if (h.DomainId != domainId) return "record of another domain";
        if (h.Length < RecordHeader.SizeOf || h.Length % BeConstants.SectorSize != 0 || h.Length > areaSize
            || h.BodyLength > h.Length - RecordHeader.SizeOf)
            return $"record length {h.Length} / body {h.BodyLength} is invalid";
        return null;
    }

    /// <summary>Checks every group chunk of a record whose header is valid; null if intact, else what is wrong and where (offset in the record).</summary>
    public static string? CheckBody(ReadOnlySpan<byte> record, in RecordHeader h, out int badOffset)
    {
        int pos = RecordHeader.SizeOf;
        int end = RecordHeader.SizeOf + (int)h.BodyLength;
        uint crcs = ~0u;
        Span<byte> crcBytes = stackalloc byte[4];
        for (uint g = 0; g < h.GroupCount; g++)
        {
            badOffset = pos;
            if (end - pos < GroupHeader.SizeOf) return $"group {g} overruns the record body";
            var gh = MemoryMarshal.Read<GroupHeader>(record[pos..]);
            if (gh.Magic != BeConstants.GroupMagic) return $"group {g}: bad magic";
            if (gh.Length < GroupHeader.SizeOf || gh.Length % 8 != 0 || gh.Length > end - pos) return $"group {g}: bad length {gh.Length}";
            var chunk = record.Slice(pos, (int)gh.Length);
            if (gh.Crc != Crc32C.Compute(chunk[..60], chunk[GroupHeader.SizeOf..])) return $"group {g}: checksum mismatch";
            string? shape = CheckShape(chunk, gh);
            if (shape != null) return $"group {g}: {shape}";
            MemoryMarshal.Write(crcBytes, gh.Crc);
            crcs = Crc32C.Append(crcs, crcBytes);
            pos += (int)gh.Length;
        }
        badOffset = pos;
        if (pos != end) return "record body length does not match its groups";
        if (~crcs != h.GroupCrcs) return "record's group checksums do not match its header";
        badOffset = 0;
        return null;
    }

    private static string? CheckShape(ReadOnlySpan<byte> chunk, in GroupHeader gh)
    {
        long pos = GroupHeader.SizeOf + (long)gh.RegionCount * RegionDesc.SizeOf;
        if (pos > chunk.Length) return "region descriptors overrun the group";
        if ((long)gh.MarkCount * ChecksumDesc.SizeOf > chunk.Length - pos) return "checksum descriptors overrun the group";
        var descs = MemoryMarshal.Cast<byte, RegionDesc>(chunk.Slice(GroupHeader.SizeOf, (int)gh.RegionCount * RegionDesc.SizeOf));
        foreach (var d in descs)
        {
            if (d.Offset < 0 || d.Offset + d.Length > gh.SegmentSize) return $"region [0x{d.Offset:X}, +{d.Length}) is outside the segment size {gh.SegmentSize}";
            pos += LogFormat.Align8((int)d.Length);
            if (pos > chunk.Length) return "region bytes overrun the group";
        }
        for (uint p = 0; p < gh.PayloadCount; p++)
        {
            if (pos + PayloadHeader.SizeOf > chunk.Length) return "payload header overruns the group";
            var ph = MemoryMarshal.Read<PayloadHeader>(chunk[(int)pos..]);
            pos += PayloadHeader.SizeOf + LogFormat.Align8((int)ph.Length);
            if (pos > chunk.Length) return "payload overruns the group";
        }
        long marksAt = chunk.Length - (long)gh.MarkCount * ChecksumDesc.SizeOf;
        if (pos != marksAt) return "group length does not match its contents";
        foreach (var m in Marks(chunk, gh))
        {
            if (m.Kind == ChecksumDescKind.Cancel)
            {
                if (m.Block < 0 || m.Block >= gh.SegmentSize) return $"checksum cancel at 0x{m.Block:X} is outside the segment size {gh.SegmentSize}";
            }
            else if (m.Kind != ChecksumDescKind.Placed) return $"checksum descriptor of block 0x{m.Block:X} has unknown kind {m.Kind}";
            else if (m.Block < 0 || m.Length < 4 || m.Block + m.Length > gh.SegmentSize || m.CrcOffset > m.Length - 4 || m.Magic == 0)
                return $"checksum descriptor of block [0x{m.Block:X}, +{m.Length}) (crc at +{m.CrcOffset}) is invalid for segment size {gh.SegmentSize}";
        }
        return null;
    }

    /// <summary>The checksum descriptors of a group chunk whose shape is valid: its last MarkCount * 24 bytes.</summary>
    public static ReadOnlySpan<ChecksumDesc> Marks(ReadOnlySpan<byte> chunk, in GroupHeader gh) =>
        MemoryMarshal.Cast<byte, ChecksumDesc>(chunk[(chunk.Length - (int)gh.MarkCount * ChecksumDesc.SizeOf)..]);

    /// <summary>
    /// Folds a valid group's checksum descriptors into <paramref name="pending"/>, by block: a placed one
    /// replaces any earlier one for its block, a cancel drops it. Placing and recovery keep the same map.
    /// </summary>
    public static void CollectMarks(ReadOnlySpan<byte> chunk, in GroupHeader gh, Dictionary<long, ChecksumDesc> pending)
    {
        foreach (ref readonly var m in Marks(chunk, gh))
        {
            if (m.Kind == ChecksumDescKind.Placed) pending[m.Block] = m;
            else pending.Remove(m.Block);
        }
    }

    /// <summary>Walks the group chunks of a validated record.</summary>
    public ref struct Groups(ReadOnlySpan<byte> record, uint count)
    {
        private readonly ReadOnlySpan<byte> _record = record;
        private int _pos = RecordHeader.SizeOf;
        private uint _left = count;

        public bool MoveNext(out GroupHeader header, out ReadOnlySpan<byte> chunk)
        {
            if (_left == 0)
            {
                header = default;
                chunk = default;
                return false;
            }
            _left--;
            header = MemoryMarshal.Read<GroupHeader>(_record[_pos..]);
            chunk = _record.Slice(_pos, (int)header.Length);
            _pos += (int)header.Length;
            return true;
        }
    }

    /// <summary>Walks the regions of a validated group chunk.</summary>
    public ref struct Regions
    {
        private readonly ReadOnlySpan<byte> _chunk;
        private readonly int _count;
        private int _i;
        private int _data;

        public Regions(ReadOnlySpan<byte> chunk, in GroupHeader gh)
        {
            _chunk = chunk;
            _count = (int)gh.RegionCount;
            _data = GroupHeader.SizeOf + _count * RegionDesc.SizeOf;
        }

        public bool MoveNext(out long offset, out ReadOnlySpan<byte> bytes)
        {
            if (_i == _count)
            {
                offset = 0;
                bytes = default;
                return false;
            }
            var d = MemoryMarshal.Read<RegionDesc>(_chunk[(GroupHeader.SizeOf + _i * RegionDesc.SizeOf)..]);
            _i++;
            offset = d.Offset;
            bytes = _chunk.Slice(_data, (int)d.Length);
            _data += LogFormat.Align8((int)d.Length);
            return true;
        }

        /// <summary>After the last region: where the payloads start.</summary>
        public readonly int PayloadStart => _data;
    }
}
