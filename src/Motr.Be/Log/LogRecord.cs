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
        bool packed = gh.IsPacked;
        if ((gh.Flags & ~GroupFlags.Packed) != 0) return $"unknown flags 0x{gh.Flags:X}";
        // Segments grow by whole pages up to the engine's limit; anything else would commit memory or place bytes wrongly.
        if (gh.SegmentSize < 0 || gh.SegmentSize % BeConstants.PageSize != 0 || gh.SegmentSize > BeConstants.MaxSegmentSize)
            return $"segment size {gh.SegmentSize} is not a multiple of {BeConstants.PageSize} from 0 to {BeConstants.MaxSegmentSize}";
        long pos = GroupHeader.SizeOf + (long)gh.RegionCount * (packed ? RegionDesc.SizeOf : RegionDescV1.SizeOf);
        if (pos > chunk.Length) return "region descriptors overrun the group";
        if ((long)gh.MarkCount * MarkSize(gh) > chunk.Length - pos) return "checksum descriptors overrun the group";
        var regions = new Regions(chunk, gh);
        while (regions.MoveNextDesc(out long offset, out int length))
        {
            if (offset < 0 || (packed && length == 0) || length > gh.SegmentSize || offset > gh.SegmentSize - length) return $"region [0x{offset:X}, +{length}) is outside the segment size {gh.SegmentSize}";
            if (regions.DataEnd > chunk.Length) return "region bytes overrun the group";
        }
        pos = regions.PayloadStart;
        if (pos > chunk.Length) return "region bytes overrun the group";
        for (uint p = 0; p < gh.PayloadCount; p++)
        {
            if (pos + PayloadHeader.SizeOf > chunk.Length) return "payload header overruns the group";
            var ph = MemoryMarshal.Read<PayloadHeader>(chunk[(int)pos..]);
            // Wide arithmetic: a damaged length may be near 2^32.
            pos += PayloadHeader.SizeOf + (((long)ph.Length + 7) & ~7L);
            if (pos > chunk.Length) return "payload overruns the group";
        }
        long marksAt = chunk.Length - (long)gh.MarkCount * MarkSize(gh);
        if (pos != marksAt) return "group length does not match its contents";
        var marks = new Marks(chunk, gh);
        while (marks.MoveNext(out var m))
        {
            if (m.Kind == ChecksumDescKind.Cancel)
            {
                if (m.Block < 0 || m.Block >= gh.SegmentSize) return $"checksum cancel at 0x{m.Block:X} is outside the segment size {gh.SegmentSize}";
            }
            else if (m.Kind != ChecksumDescKind.Placed) return $"checksum descriptor of block 0x{m.Block:X} has unknown kind {m.Kind}";
            else if (m.Block < 0 || m.Length < 4 || m.Length > int.MaxValue || m.Block + m.Length > gh.SegmentSize || m.CrcOffset > m.Length - 4 || m.Magic == 0)
                return $"checksum descriptor of block [0x{m.Block:X}, +{m.Length}) (crc at +{m.CrcOffset}) is invalid for segment size {gh.SegmentSize}";
        }
        return null;
    }

    /// <summary>Bytes of one checksum descriptor in the group: 16 packed, 24 not.</summary>
    public static int MarkSize(in GroupHeader gh) => gh.IsPacked ? PackedChecksumDesc.SizeOf : ChecksumDesc.SizeOf;

    /// <summary>
    /// Folds a valid group's checksum descriptors into <paramref name="pending"/>, by block: a placed one
    /// replaces any earlier one for its block, a cancel drops it. Placing and recovery keep the same map.
    /// </summary>
    public static void CollectMarks(ReadOnlySpan<byte> chunk, in GroupHeader gh, Dictionary<long, ChecksumDesc> pending)
    {
        var marks = new Marks(chunk, gh);
        while (marks.MoveNext(out var m))
        {
            if (m.Kind == ChecksumDescKind.Placed) pending[m.Block] = m;
            else pending.Remove(m.Block);
        }
    }

    /// <summary>The checksum descriptors of a group chunk whose shape is valid (its last MarkCount descriptors), packed or not.</summary>
    public ref struct Marks
    {
        private readonly ReadOnlySpan<byte> _marks;
        private readonly bool _packed;
        private int _pos;

        public Marks(ReadOnlySpan<byte> chunk, in GroupHeader gh)
        {
            _packed = gh.IsPacked;
            _marks = chunk[(chunk.Length - (int)gh.MarkCount * MarkSize(gh))..];
        }

        public bool MoveNext(out ChecksumDesc m)
        {
            if (_pos == _marks.Length)
            {
                m = default;
                return false;
            }
            if (_packed)
            {
                m = MemoryMarshal.Read<PackedChecksumDesc>(_marks[_pos..]).ToDesc();
                _pos += PackedChecksumDesc.SizeOf;
            }
            else
            {
                m = MemoryMarshal.Read<ChecksumDesc>(_marks[_pos..]);
                _pos += ChecksumDesc.SizeOf;
            }
            return true;
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

    /// <summary>Walks the regions of a group chunk, packed or not (<see cref="GroupFlags.Packed"/>).</summary>
    public ref struct Regions
    {
        private readonly ReadOnlySpan<byte> _chunk;
        private readonly int _count;
        private readonly bool _packed;
        private int _i;
        private long _data;

        public Regions(ReadOnlySpan<byte> chunk, in GroupHeader gh)
        {
            _chunk = chunk;
            _count = (int)gh.RegionCount;
            _packed = gh.IsPacked;
            _data = GroupHeader.SizeOf + (long)_count * (_packed ? RegionDesc.SizeOf : RegionDescV1.SizeOf);
        }

        /// <summary>The next region of a validated group: where it goes and its bytes.</summary>
        public bool MoveNext(out long offset, out ReadOnlySpan<byte> bytes)
        {
            long at = _data;
            if (!MoveNextDesc(out offset, out int length))
            {
                bytes = default;
                return false;
            }
            bytes = _chunk.Slice((int)at, length);
            return true;
        }

        /// <summary>The next region's descriptor only, for checking a group's shape: its bytes may overrun the chunk.</summary>
        public bool MoveNextDesc(out long offset, out int length)
        {
            if (_i == _count)
            {
                offset = 0;
                length = 0;
                return false;
            }
            if (_packed)
            {
                var d = MemoryMarshal.Read<RegionDesc>(_chunk[(GroupHeader.SizeOf + _i * RegionDesc.SizeOf)..]);
                offset = d.Offset;
                length = d.Length;
                _data += length;
            }
            else
            {
                var d = MemoryMarshal.Read<RegionDescV1>(_chunk[(GroupHeader.SizeOf + _i * RegionDescV1.SizeOf)..]);
                offset = d.Offset;
                length = (int)Math.Min(d.Length, int.MaxValue);
                _data += LogFormat.Align8((long)d.Length);
            }
            _i++;
            return true;
        }

        /// <summary>Where the bytes of the regions walked so far end.</summary>
        public readonly long DataEnd => _data;

        /// <summary>After the last region: where the payloads start (packed regions' bytes are padded to 8 once, at their end).</summary>
        public readonly int PayloadStart => (int)Math.Min(_packed ? LogFormat.Align8(_data) : _data, int.MaxValue);
    }
}
