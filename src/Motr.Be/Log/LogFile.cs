using System.Runtime.InteropServices;
using Motr.Be.Storage;

namespace Motr.Be.Log;

/// <summary>
/// The log file: two header slots holding the checkpoint, and a circular record area addressed by
/// logical positions. See LogFormat.cs for the layout.
/// </summary>
internal sealed class LogFile : IDisposable
{
    private readonly IStorageFile _file;
    private LogHeaderSlot _slot;

    public string Where { get; }
    public long AreaSize => _slot.AreaSize;
    public ulong DomainId => _slot.DomainId;
    public uint SegmentCount => _slot.SegmentCount;
    public long CheckpointPosition => _slot.CheckpointPosition;
    public ulong CheckpointLsn => _slot.CheckpointLsn;

    /// <summary>Why the other header slot was not used when the log was opened (damaged), or null when both were valid.</summary>
    public string? SkippedSlot { get; private init; }

    /// <summary>Whether <see cref="SkippedSlot"/> was damage (magic, checksum, impossible fields), not a newer build's slot.</summary>
    public bool SkippedSlotDamaged { get; private init; }

    private LogFile(IStorageFile file, string where, LogHeaderSlot slot)
    {
        _file = file;
        Where = where;
        _slot = slot;
    }

    /// <summary>
    /// Creates a log of <paramref name="fileSize"/> bytes, written in full so later fdatasyncs need no block allocation.
    /// <paramref name="cancellationToken"/> is looked at first, before each MiB written and before the rename that puts the log
    /// in place: cancelled, the log is left under its temporary name (an interrupted creation).
    /// </summary>
    public static void Create(IStorage storage, ulong domainId, long fileSize, uint segmentCount, CancellationToken cancellationToken = default)
    {
        if (fileSize < LogFormat.AreaOffset + MinAreaSize || fileSize % BeConstants.PageSize != 0)
            throw new ArgumentOutOfRangeException(nameof(fileSize), $"log size {fileSize} must be a multiple of {BeConstants.PageSize} and at least {LogFormat.AreaOffset + MinAreaSize}");
        cancellationToken.ThrowIfCancellationRequested();
        string tmp = BeConstants.LogFileName + ".new";
        storage.Delete(tmp);
        using (var f = storage.Open(tmp, StorageOpenMode.CreateNew))
        {
            var zeros = new byte[Math.Min(fileSize, 1 << 20)];
            for (long pos = 0; pos < fileSize; pos += zeros.Length)
            {
                cancellationToken.ThrowIfCancellationRequested(); // the whole log is written: a creation the caller gave up stops
                f.Write(pos, zeros.AsSpan(0, (int)Math.Min(zeros.Length, fileSize - pos)));
            }
            var slot = new LogHeaderSlot
            {
                Magic = BeConstants.LogHeaderMagic,
                Version = BeConstants.LogVersion,
                DomainId = domainId,
                FileSize = fileSize,
                AreaOffset = LogFormat.AreaOffset,
                AreaSize = fileSize - LogFormat.AreaOffset,
                SlotSeq = 1,
                CheckpointPosition = 0,
                CheckpointLsn = 1,
                CreatedUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
                SegmentCount = segmentCount,
            };
            WriteSlot(f, slot, 0);
            slot.SlotSeq = 0; // slot B starts older than A
            WriteSlot(f, slot, 1);
            f.Flush();
        }
        cancellationToken.ThrowIfCancellationRequested(); // the last moment: the rename commits the creation
        storage.Rename(tmp, BeConstants.LogFileName);
    }

    private static void WriteSlot(IStorageFile f, LogHeaderSlot slot, int index)
    {
        Span<byte> buf = stackalloc byte[LogHeaderSlot.SizeOf];
        buf.Clear();
        MemoryMarshal.Write(buf, slot);
        uint crc = Crc32C.Compute(buf[..LogHeaderSlot.CrcOffset]);
        MemoryMarshal.Write(buf[LogHeaderSlot.CrcOffset..], crc);
        f.Write(index * BeConstants.SectorSize, buf);
    }

    /// <summary>Smallest record area a log is created with.</summary>
    private const long MinAreaSize = 64 * 1024;

    /// <summary>Largest logical position a checkpoint may name: far beyond any real log's life, far from overflow.</summary>
    private const long MaxPosition = long.MaxValue / 4;

    /// <summary>
    /// Opens the log and reads the newest valid header slot (one whose checksum holds and whose fields are possible).
    /// <paramref name="readOnly"/>: the file is opened <see cref="StorageAccess.ReadOnly"/>, and every write to it throws.
    /// </summary>
    public static LogFile Open(IStorage storage, bool readOnly = false)
    {
        var f = storage.Open(BeConstants.LogFileName, StorageOpenMode.OpenExisting, readOnly ? StorageAccess.ReadOnly : StorageAccess.Positional);
        string where = $"{storage.Location}/{BeConstants.LogFileName}";
        try
        {
            long length = f.Length;
            if (length < LogFormat.AreaOffset)
                throw new BeCorruptionException(where, length, $"log file is truncated: {length} bytes, shorter than its {LogFormat.AreaOffset}-byte header");
            LogHeaderSlot? best = null;
            string? firstProblem = null, skipped = null;
            bool skippedDamaged = false;
            (ulong Seq, string Problem)? otherBuilds = null; // an intact slot of a format this build does not read
            Span<byte> buf = stackalloc byte[LogHeaderSlot.SizeOf];
            for (int i = 0; i < 2; i++)
            {
                f.Read(i * BeConstants.SectorSize, buf);
                var s = MemoryMarshal.Read<LogHeaderSlot>(buf);
                string? problem = null;
                bool otherVersion = false; // a slot of another format is another build's checkpoint, not damage: never rewritten by this one
                if (s.Magic != BeConstants.LogHeaderMagic) problem = $"header slot {i}: not a Motr log (magic 0x{s.Magic:X16}, expected 0x{BeConstants.LogHeaderMagic:X16})";
                else if (s.Crc != Crc32C.Compute(buf[..LogHeaderSlot.CrcOffset])) problem = $"header slot {i}: checksum mismatch";
                else if (s.Version < BeConstants.MinLogVersion || s.Version > BeConstants.LogVersion)
                {
                    problem = $"header slot {i}: log format version {s.Version} is not supported; this build reads versions {BeConstants.MinLogVersion} to {BeConstants.LogVersion}";
                    otherVersion = true;
                }
                else if (s.AreaOffset != LogFormat.AreaOffset || s.AreaSize < MinAreaSize || s.AreaSize % BeConstants.PageSize != 0 || s.FileSize != s.AreaOffset + s.AreaSize)
                    problem = $"header slot {i}: impossible geometry: area of {s.AreaSize} bytes at {s.AreaOffset} in a {s.FileSize}-byte file";
                else if (s.CheckpointPosition < 0 || s.CheckpointPosition % BeConstants.SectorSize != 0 || s.CheckpointPosition > MaxPosition || s.CheckpointLsn == 0)
                    problem = $"header slot {i}: impossible checkpoint: position {s.CheckpointPosition}, lsn {s.CheckpointLsn}";
                if (problem != null)
                {
                    firstProblem ??= problem;
                    skipped = problem;
                    skippedDamaged = !otherVersion;
                    if (otherVersion) otherBuilds = (s.SlotSeq, problem);
                    continue;
                }
                if (best is null || s.SlotSeq > best.Value.SlotSeq) best = s;
            }
            if (best is not { } slot) throw new BeCorruptionException(where, 0, firstProblem!);
            // The newest checkpoint another build's: it wrote this log last, in a format whose records and checkpoints
            // this build cannot follow (the older slot's checkpoint would replay too little, and its next checkpoint
            // would overwrite the newer build's).
            if (otherBuilds is { } other && other.Seq > slot.SlotSeq)
                throw new BeCorruptionException(where, 0, $"{other.Problem}, and it holds the newest checkpoint: the log was last written by " +
                    "another build; open it with that build");
            if (slot.FileSize != length || slot.AreaOffset != LogFormat.AreaOffset || slot.AreaSize != length - LogFormat.AreaOffset)
                throw new BeCorruptionException(where, 24, $"log geometry does not match the file: header says {slot.FileSize} bytes, file has {length}");
            return new LogFile(f, where, slot) { SkippedSlot = skipped, SkippedSlotDamaged = skippedDamaged };
        }
        catch
        {
            f.Dispose();
            throw;
        }
    }

    /// <summary>Physical file offset of a logical position.</summary>
    public long Physical(long position) => LogFormat.AreaOffset + position % _slot.AreaSize;

    /// <summary>Bytes from <paramref name="position"/> to the end of the area.</summary>
    public long ToLapEnd(long position) => _slot.AreaSize - position % _slot.AreaSize;

    public int Read(long physical, Span<byte> dst) => _file.Read(physical, dst);

    public void WriteRecord(long position, ReadOnlySpan<byte> record) => _file.Write(Physical(position), record);

    /// <summary>Writes a record given as parts (header, group chunks, padding) at <paramref name="position"/>.</summary>
    public void WriteRecord(long position, IReadOnlyList<ReadOnlyMemory<byte>> parts) => _file.Write(Physical(position), parts);

    public void Flush() => _file.Flush();

    /// <summary>Records a new checkpoint in the older slot and syncs it (the caller then frees the space).</summary>
    public void WriteCheckpoint(long position, ulong lsn)
    {
        var next = _slot;
        next.Version = BeConstants.LogVersion; // a log opened at an older version is written at this one from now on
        next.SlotSeq++;
        next.CheckpointPosition = position;
        next.CheckpointLsn = lsn;
        WriteSlot(_file, next, (int)(next.SlotSeq % 2 == 1 ? 0 : 1));
        _file.Flush();
        _slot = next;
    }

    /// <summary>
    /// Writes the current checkpoint again, into the other header slot, so that both hold it: a damaged slot is restored,
    /// or an older checkpoint the log no longer follows on from is replaced.
    /// </summary>
    public void CopyCheckpointToOtherSlot() => WriteCheckpoint(_slot.CheckpointPosition, _slot.CheckpointLsn);

    /// <summary>
    /// Rewrites the checkpoint with a new segment count (the domain gained segments), into both header slots: with only
    /// the newest holding it, the loss of that slot (what the other is there to survive) would leave a checkpoint whose
    /// count omits a segment the log's later records name.
    /// </summary>
    public void SetSegmentCount(uint count)
    {
        _slot.SegmentCount = count;
        WriteCheckpoint(_slot.CheckpointPosition, _slot.CheckpointLsn);
        CopyCheckpointToOtherSlot();
    }

    public void Dispose() => _file.Dispose();
}
