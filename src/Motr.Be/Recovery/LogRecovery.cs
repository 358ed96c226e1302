using System.Buffers;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Motr.Be.Log;
using Motr.Be.Placing;
using Motr.Be.Segments;

namespace Motr.Be.Recovery;

/// <summary>
/// Replays the log at open: every complete, valid record after the checkpoint, in lsn order, into the
/// segment images and (through the placer) the segment files; then checkpoints at the end. A damaged
/// or incomplete record with nothing valid after it is a torn tail and is cut off; a damaged record
/// followed by valid ones is corruption, reported (never skipped silently).
/// <para>
/// Without a placer (<see cref="DomainOptions.ReadOnly"/>) it replays into the segment images only and writes
/// nothing: no placing, no checkpoint, no erasing of a torn tail or of records discarded by
/// <see cref="RecoveryMode.TruncateAtCorruption"/>, no rewrite of a damaged header slot. The images are the same
/// as a writing recovery leaves; the log and the files stay as they were, and the report says so.
/// </para>
/// </summary>
internal sealed class LogRecovery
{
    private enum Status { Valid, Absent, Damaged }

    private readonly LogFile _log;
    private readonly IReadOnlyDictionary<ulong, Segment> _segments;
    private readonly Placer? _placer; // null: read-only, memory only
    private readonly DomainOptions _options;
    private readonly long _maxRecord;
    private byte[] _buf;

    public LogRecovery(LogFile log, IReadOnlyDictionary<ulong, Segment> segments, Placer? placer, DomainOptions options, long maxRecord)
    {
        _log = log;
        _segments = segments;
        _placer = placer;
        _options = options;
        _maxRecord = maxRecord;
        _buf = ArrayPool<byte>.Shared.Rent(64 * 1024);
    }

    /// <summary>
    /// Replays the log. A cancellation is seen before each record, while the end of the log is looked for (that search
    /// may read the whole log area), and before each segment file sync of the checkpoint that ends recovery, up to that
    /// checkpoint's record in the log header: what was replayed so far is in the images and the segment files, the
    /// checkpoint has not moved, so the next open replays the same records again (placing them twice writes the same
    /// bytes) and reports their payloads again. Once the checkpoint is recorded it is not seen: the next open would
    /// replay nothing, so this one must complete.
    /// </summary>
    public RecoveryReport Run(CancellationToken cancellationToken = default)
    {
        var sw = Stopwatch.StartNew();
        long start = _log.CheckpointPosition, pos = start;
        ulong startLsn = _log.CheckpointLsn, lsn = startLsn;
        long records = 0, groups = 0, txs = 0, bytes = 0, lastProgress = 0;
        string? torn = null, truncated = null;
        try
        {
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var status = TryRead(pos, lsn, out string? problem);
                if (status == Status.Absent && _log.ToLapEnd(pos) < _log.AreaSize)
                {
                    // The writer starts a record at the next lap when it does not fit before the end.
                    long next = pos + _log.ToLapEnd(pos);
                    var s2 = TryRead(next, lsn, out string? p2);
                    if (s2 != Status.Absent)
                    {
                        pos = next;
                        status = s2;
                        problem = p2;
                    }
                }
                if (status == Status.Valid)
                {
                    var h = MemoryMarshal.Read<RecordHeader>(_buf);
                    Apply(h, ref groups, ref txs);
                    _placer?.Place(new DurableRecord(_buf, (int)h.Length, h.Lsn, pos));
                    pos += h.Length;
                    lsn++;
                    records++;
                    bytes += h.Length;
                    if (bytes - lastProgress >= 64L << 20)
                    {
                        lastProgress = bytes;
                        _options.RecoveryProgress?.Report(new RecoveryProgress(records, bytes, _log.AreaSize));
                    }
                    continue;
                }

                // The end of the log, or damage in the middle of it?
                if (_log.SkippedSlot != null) RefuseIfLogWentFurther(pos, lsn, cancellationToken);
                string where = $"record lsn {lsn} at {_log.Where} offset 0x{_log.Physical(pos):X}";
                if (FindLaterRecord(pos, lsn, out long laterPos, out ulong laterLsn, cancellationToken))
                {
                    string what = $"{where} is damaged ({problem}) but a valid record lsn {laterLsn} follows at offset 0x{_log.Physical(laterPos):X}";
                    if (_options.RecoveryMode == RecoveryMode.Strict)
                        throw new BeCorruptionException(_log.Where, _log.Physical(pos),
                            $"log corruption: record lsn {lsn} is damaged ({problem}) but a valid record lsn {laterLsn} follows at offset 0x{_log.Physical(laterPos):X}; " +
                            "refusing to open (RecoveryMode.TruncateAtCorruption opens with the damaged record and everything after it discarded)")
                        { TruncationOpens = true };
                    truncated = what + (_placer is null ? "; it and every later record were left out (read-only: the log still holds them)" : "; it and every later record were discarded");
                    _options.Warn("recovery: " + truncated);
                }
                else if (status == Status.Damaged)
                {
                    torn = $"{where}: {problem}; treated as a torn write and cut off" + (_placer is null ? " (read-only: the log still holds it)" : "");
                    _options.Warn("recovery: " + torn);
                }
                break;
            }
            cancellationToken.ThrowIfCancellationRequested();
            SealPlacedChecksums();
            if (_placer != null)
            {
                if (torn != null) EraseTorn(pos);
                if (truncated != null)
                {
                    // The discarded records stay in the log: the lsns go on past every one of them, which makes them
                    // what an older lap's records are to every later recovery (never replayed, never taken for
                    // records after the end), and the one checkpoint below is the whole of the truncation.
                    lsn = LsnPastArea(lsn, cancellationToken);
                    _placer.ContinueAt(lsn);
                }
                if (records > 0 || truncated != null)
                {
                    _placer.Checkpoint(cancellationToken); // writes the other slot: a damaged one is rewritten
                    // The slot before the truncation's holds a checkpoint from before it, which the lsns going on past the
                    // discarded records no longer follow on from: lost the newest slot, recovery from that one would meet
                    // them and refuse. Both slots get the truncation's checkpoint.
                    if (truncated != null) _log.CopyCheckpointToOtherSlot();
                }
                else if (_log.SkippedSlotDamaged) _log.CopyCheckpointToOtherSlot(); // restore the second copy
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(_buf);
        }
        return new RecoveryReport
        {
            CheckpointPosition = start,
            CheckpointLsn = startLsn,
            RecordsReplayed = records,
            GroupsReplayed = groups,
            TxsReplayed = txs,
            BytesReplayed = bytes,
            EndPosition = pos,
            NextLsn = lsn,
            TornTail = torn,
            Truncated = truncated,
            DamagedHeaderSlot = _log.SkippedSlotDamaged ? _log.SkippedSlot : null,
            Duration = sw.Elapsed,
        };
    }

    /// <summary>Reads the record that should be at <paramref name="pos"/> with <paramref name="lsn"/> into the buffer.</summary>
    private Status TryRead(long pos, ulong lsn, out string? problem)
    {
        long phys = _log.Physical(pos);
        Span<byte> hdr = stackalloc byte[RecordHeader.SizeOf];
        if (_log.Read(phys, hdr) < hdr.Length) { problem = "log ends"; return Status.Absent; }
        problem = LogRecord.CheckHeader(hdr, _log.DomainId, _log.AreaSize, out var h);
        if (problem != null)
        {
            if (IsOtherBuilds(hdr, h, pos, lsn))
                throw new BeCorruptionException(_log.Where, phys,
                    $"record lsn {lsn} at offset 0x{phys:X} is of log format version {h.Version}, which this build does not read (it reads " +
                    $"{BeConstants.MinLogVersion} to {BeConstants.LogVersion}): the log was written on by another build; open it with that " +
                    "build. Refusing in every mode: taking the record for the log's end would drop it and every record after it");
            return Status.Absent;
        }
        if (h.Lsn != lsn || h.Position != pos)
        {
            problem = $"found lsn {h.Lsn} written for position {h.Position} (an older lap)";
            return Status.Absent;
        }
        if (h.Length > _log.ToLapEnd(pos)) { problem = $"length {h.Length} runs past the end of the log area"; return Status.Damaged; }
        if (_buf.Length < h.Length)
        {
            ArrayPool<byte>.Shared.Return(_buf);
            _buf = ArrayPool<byte>.Shared.Rent((int)h.Length);
        }
        var rec = _buf.AsSpan(0, (int)h.Length);
        if (_log.Read(phys, rec) < rec.Length) { problem = "record is cut short by the end of the file"; return Status.Damaged; }
        problem = LogRecord.CheckBody(rec, h, out int bad);
        if (problem != null)
        {
            problem += $" (at record offset {bad})";
            return Status.Damaged;
        }
        return Status.Valid;
    }

    /// <summary>
    /// Whether the header is, intact, the record expected next (this lsn at this position, of this domain) in a log format
    /// this build does not read: a newer build's record, which must stop recovery rather than end the log there.
    /// </summary>
    private bool IsOtherBuilds(ReadOnlySpan<byte> hdr, in RecordHeader h, long pos, ulong lsn) =>
        h.Magic == BeConstants.LogRecordMagic && h.HeaderCrc == LogRecord.HeaderCrc(hdr)
        && (h.Version < BeConstants.MinLogVersion || h.Version > BeConstants.LogVersion)
        && h.Lsn == lsn && h.Position == pos && h.DomainId == _log.DomainId;

    /// <summary>
    /// With one header slot damaged, the checkpoint in use may be the older one, and the log may since have
    /// wrapped over it: then its first record's place holds a later lap's record (or the middle of one), which
    /// reads as the end of the log, and opening would silently drop every record after the lost checkpoint.
    /// So when a slot was skipped, the end recovery reached (lsn <paramref name="lsn"/>) is checked against the
    /// whole area: an intact record header with a greater lsn proves the log went further. Neither replaying
    /// from this checkpoint nor cutting the log is then safe (records after the lost checkpoint may already be
    /// placed), so the open is refused in every recovery mode. Costs one read of the area, only in this case.
    /// </summary>
    private void RefuseIfLogWentFurther(long pos, ulong lsn, CancellationToken cancellationToken)
    {
        if (!NewestInArea(cancellationToken, out long at, out var h) || h.Lsn <= lsn) return;
        string why = $"the newest checkpoint is lost ({_log.SkippedSlot})";
        throw new BeCorruptionException(_log.Where, at,
            $"log corruption: {why} and the checkpoint in use (lsn {_log.CheckpointLsn} at position {_log.CheckpointPosition}) is out of date: " +
            $"recovery found the log's end at lsn {lsn} (position {pos}), but record lsn {h.Lsn} for position {h.Position} is written at " +
            $"offset 0x{at:X}: the log has wrapped over that checkpoint. Refusing to open in any recovery mode, " +
            "since replaying from it would miss records and cutting the log would lose placed ones");
    }

    /// <summary>
    /// The intact record header with the greatest lsn anywhere in the log area (a header whose checks pass, whatever
    /// its body), and its file offset; false if there is none. Reads the whole area, a MiB at a time, looking at the
    /// token before each.
    /// </summary>
    private bool NewestInArea(CancellationToken cancellationToken, out long offset, out RecordHeader newest)
    {
        const int Chunk = 1 << 20;
        byte[] buf = ArrayPool<byte>.Shared.Rent(Chunk);
        offset = -1;
        newest = default;
        try
        {
            long area = _log.AreaSize;
            for (long at = 0; at < area; at += Chunk)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int n = _log.Read(LogFormat.AreaOffset + at, buf.AsSpan(0, (int)Math.Min(Chunk, area - at)));
                for (int i = 0; i + RecordHeader.SizeOf <= n; i += BeConstants.SectorSize)
                {
                    if (LogRecord.CheckHeader(buf.AsSpan(i, RecordHeader.SizeOf), _log.DomainId, area, out var h) != null) continue;
                    if (offset >= 0 && h.Lsn <= newest.Lsn) continue;
                    offset = LogFormat.AreaOffset + at + i;
                    newest = h;
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buf);
        }
        return offset >= 0;
    }

    /// <summary>
    /// The lsn the log goes on with after <see cref="RecoveryMode.TruncateAtCorruption"/> discarded records from
    /// <paramref name="lsn"/> on: past the greatest lsn of any intact record header in the area, so that no discarded
    /// record (nor any other left in the area) is ever taken for a record of the log's future.
    /// </summary>
    /// <exception cref="BeCorruptionException">A record header in the area carries the greatest possible lsn.</exception>
    private ulong LsnPastArea(ulong lsn, CancellationToken cancellationToken)
    {
        if (!NewestInArea(cancellationToken, out long at, out var h) || h.Lsn < lsn) return lsn;
        if (h.Lsn == ulong.MaxValue)
            throw new BeCorruptionException(_log.Where, at, $"record header at offset 0x{at:X} carries lsn {h.Lsn}, the greatest there is: " +
                "the log cannot go on past it after the truncation");
        return h.Lsn + 1;
    }

    /// <summary>
    /// Looks for an intact record with an lsn after <paramref name="lsn"/> - 1 where the successors of a
    /// record at <paramref name="pos"/> could be: within one maximal record after it, or at the next lap.
    /// The writer writes a record only after the previous one is durable, so finding one means the
    /// damaged record was durable once: corruption, not a torn write.
    /// </summary>
    private bool FindLaterRecord(long pos, ulong lsn, out long laterPos, out ulong laterLsn, CancellationToken cancellationToken)
    {
        Span<byte> hdr = stackalloc byte[RecordHeader.SizeOf];
        long lapStart = pos + _log.ToLapEnd(pos);
        // A group may outgrow the largest record while another transaction stays open (it cannot be sealed
        // mid-way), so a record can be longer: when the damaged record's own header is intact, look as far as it says.
        // A header that carries the record magic but fails its checks is damage, not a torn write (sectors are
        // written whole): its length is unknown, so look through the whole lap for the record after it.
        long reach = _maxRecord;
        if (_log.Read(_log.Physical(pos), hdr) == hdr.Length)
        {
            string? headerProblem = LogRecord.CheckHeader(hdr, _log.DomainId, _log.AreaSize, out var own);
            if (headerProblem == null && own.Lsn == lsn && own.Position == pos) reach = Math.Max(reach, own.Length);
            else if (headerProblem != null && own.Magic == BeConstants.LogRecordMagic) reach = _log.AreaSize;
        }
        foreach (long start in new[] { pos, lapStart })
        {
            long limit = Math.Min(start + reach + BeConstants.SectorSize, start + _log.ToLapEnd(start));
            for (long p = start; p < limit; p += BeConstants.SectorSize)
            {
                cancellationToken.ThrowIfCancellationRequested(); // a sector a read: up to the whole area
                if (_log.Read(_log.Physical(p), hdr) < hdr.Length) break;
                if (LogRecord.CheckHeader(hdr, _log.DomainId, _log.AreaSize, out var h) != null) continue;
                if (h.Position != p || h.Lsn < lsn || (h.Lsn == lsn && p == pos)) continue;
                if (TryRead(p, h.Lsn, out _) != Status.Valid) continue;
                laterPos = p;
                laterLsn = h.Lsn;
                return true;
            }
        }
        laterPos = 0;
        laterLsn = 0;
        return false;
    }

    /// <summary>
    /// Zeroes the header sector of the torn record that was cut at <paramref name="pos"/>, and syncs, before anything
    /// new is written. The writer of the recovered domain gives the same lsn to its first record; when that record
    /// does not fit before the end of the lap it goes to the next lap, and the torn header, left in place, would make
    /// the next recovery see a damaged record followed by a valid one of the same lsn: corruption, refusing to open.
    /// </summary>
    private void EraseTorn(long pos)
    {
        Span<byte> zeros = stackalloc byte[BeConstants.SectorSize];
        zeros.Clear();
        _log.WriteRecord(pos, zeros);
        _log.Flush();
    }

    private unsafe void Apply(in RecordHeader h, ref long groups, ref long txs)
    {
        var rec = _buf.AsSpan(0, (int)h.Length);
        var it = new LogRecord.Groups(rec, h.GroupCount);
        while (it.MoveNext(out var gh, out var chunk))
        {
            if (!_segments.TryGetValue(gh.SegmentId, out var seg))
                throw new BeCorruptionException(_log.Where, _log.Physical(h.Position), $"record lsn {h.Lsn} names segment {gh.SegmentId}, which the domain does not have");
            if (gh.SegmentSize > seg.MaxSize)
                throw new BeCorruptionException(_log.Where, _log.Physical(h.Position), $"record lsn {h.Lsn} grows segment {gh.SegmentId} to {gh.SegmentSize} bytes, past its limit {seg.MaxSize}");
            seg.Memory.Commit(gh.SegmentSize);
            var regions = new LogRecord.Regions(chunk, gh);
            while (regions.MoveNext(out long offset, out var bytes))
            {
                // The record's shape was checked against its group's segment size; this guards the raw copy itself.
                if (offset > seg.Memory.Committed - bytes.Length)
                    throw new BeCorruptionException(_log.Where, _log.Physical(h.Position), $"record lsn {h.Lsn}: region [0x{offset:X}, +{bytes.Length}) of segment {gh.SegmentId} is outside its {seg.Memory.Committed} bytes");
                bytes.CopyTo(new Span<byte>(seg.Base + offset, bytes.Length));
            }
            if (_options.OnRecoveredPayload is { } onPayload && gh.PayloadCount > 0)
            {
                int p = regions.PayloadStart;
                for (uint i = 0; i < gh.PayloadCount; i++)
                {
                    var ph = MemoryMarshal.Read<PayloadHeader>(chunk[p..]);
                    onPayload(new RecoveredPayload(gh.SegmentId, ph.TxId, chunk.Slice(p + PayloadHeader.SizeOf, (int)ph.Length).ToArray()));
                    p += PayloadHeader.SizeOf + LogFormat.Align8((int)ph.Length);
                }
            }
            // Checksums computed at placing: the placer writes them into the file; memory, which the log
            // gave the bytes as they were captured, needs the same ones once every record is replayed.
            if (gh.MarkCount > 0)
            {
                if (!_pending.TryGetValue(gh.SegmentId, out var pending)) _pending.Add(gh.SegmentId, pending = new());
                LogRecord.CollectMarks(chunk, gh, pending);
            }
            groups++;
            txs += gh.TxCount;
        }
    }

    // Checksums the replayed groups left to placing, by segment and block (latest wins).
    private readonly Dictionary<ulong, Dictionary<long, ChecksumDesc>> _pending = new();

    /// <summary>Computes in the segment images the checksums the replayed groups left to placing, as the placer does in the files.</summary>
    private unsafe void SealPlacedChecksums()
    {
        foreach (var (id, pending) in _pending)
        {
            var seg = _segments[id];
            foreach (var m in pending.Values)
            {
                if (m.Block + m.Length > seg.Size || *(uint*)(seg.Base + m.Block) != m.Magic) continue;
                BlockChecksum.Seal(new Span<byte>(seg.Base + m.Block, (int)m.Length), (int)m.CrcOffset);
            }
        }
        _pending.Clear();
    }
}
