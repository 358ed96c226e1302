using Motr.Be.Storage;

namespace Motr.Be;

/// <summary>What recovery does when a damaged log record is followed by intact ones.</summary>
public enum RecoveryMode
{
    /// <summary>Refuse to open, with an error naming the file, offset and lsn (the default: nothing is skipped silently).</summary>
    Strict,
    /// <summary>Replay up to the damaged record, discard it and everything after it, and open. Loses the discarded transactions; the report says how many records.</summary>
    TruncateAtCorruption,
}

/// <summary>A transaction's payload handed back by recovery.</summary>
/// <param name="SegmentId">Segment of the transaction.</param>
/// <param name="TxId">Id of the transaction.</param>
/// <param name="Payload">The payload bytes.</param>
public readonly record struct RecoveredPayload(ulong SegmentId, long TxId, ReadOnlyMemory<byte> Payload);

/// <summary>How far recovery has got.</summary>
/// <param name="RecordsReplayed">Records replayed so far.</param>
/// <param name="BytesReplayed">Log bytes replayed so far.</param>
/// <param name="BytesToScan">Log bytes between the checkpoint and the end of the written log, at most.</param>
public readonly record struct RecoveryProgress(long RecordsReplayed, long BytesReplayed, long BytesToScan);

/// <summary>Settings of a <see cref="Domain"/>. The defaults suit a node with a few GiB of metadata.</summary>
public sealed class DomainOptions
{
    /// <summary>Folder of the domain (log and segment files). Ignored when <see cref="Storage"/> is set.</summary>
    public string? Path { get; set; }

    /// <summary>Storage to use instead of a folder (tests pass a <see cref="SimStorage"/>).</summary>
    public IStorage? Storage { get; set; }

    /// <summary>
    /// Create the domain if the folder holds none (default true). Without it a folder with no log is refused: with a
    /// <see cref="BeException"/> if it holds no domain, with a <see cref="BeCorruptionException"/> naming the log if
    /// segment files there hold transactions (the domain's log is lost).
    /// </summary>
    public bool CreateIfMissing { get; set; } = true;

    /// <summary>Number of segments (one per locality); default: one per processor. An existing domain keeps its segments and gains any missing ones.</summary>
    public int Segments { get; set; } = Environment.ProcessorCount;

    /// <summary>
    /// Initial size of a new segment in bytes (default 64 MiB). An open segment takes twice its current size
    /// in memory: its image, and the placer's copy of its file (on Linux with a real folder).
    /// </summary>
    public long SegmentSize { get; set; } = 64L << 20;

    /// <summary>Largest size a new segment may grow to (default 64 GiB; address space only is reserved).</summary>
    public long SegmentMaxSize { get; set; } = 64L << 30;

    /// <summary>Size of a new log file in bytes (default 256 MiB).</summary>
    public long LogSize { get; set; } = 256L << 20;

    /// <summary>
    /// Open for reading only (default false): not one byte of the domain's folder is written. The folder is taken with
    /// <see cref="IStorage.LockShared"/> (refused while an engine holds it, and keeping engines out meanwhile; a folder
    /// without its lock file is used without a lock, as creating one would write), the log and the segment files are
    /// opened <see cref="StorageAccess.ReadOnly"/>, and recovery replays the log into the segments' memory only: nothing
    /// is placed, no checkpoint is written, a torn tail is not erased, a damaged log header slot is not rewritten, and
    /// <see cref="RecoveryMode.TruncateAtCorruption"/> leaves the discarded records in the log. The open domain is the
    /// image a writing open would recover, to be read (checked, dumped): opening a transaction throws
    /// <see cref="InvalidOperationException"/>, and so does <see cref="Domain.CheckpointAsync"/>; no log writer or placer
    /// thread runs. Never creates anything: <see cref="CreateIfMissing"/> and <see cref="Segments"/> are ignored (a folder
    /// without a domain is refused; the domain's segments are opened as they are). A file system mounted read-only, or
    /// files without write permission, open.
    /// </summary>
    public bool ReadOnly { get; set; }

    /// <summary>Recovery's answer to a damaged record followed by intact ones.</summary>
    public RecoveryMode RecoveryMode { get; set; } = RecoveryMode.Strict;

    /// <summary>Receives, in log order, the payloads of the transactions recovery replays.</summary>
    public Action<RecoveredPayload>? OnRecoveredPayload { get; set; }

    /// <summary>Receives recovery progress about every 64 MiB of log replayed.</summary>
    public IProgress<RecoveryProgress>? RecoveryProgress { get; set; }

    /// <summary>
    /// Receives warnings: a torn log tail cut at recovery, a transaction left open across a turn. Called on the
    /// engine's own threads (a locality, the log writer, the placer); an exception it throws is ignored (traced),
    /// so a faulty handler cannot stop those threads.
    /// </summary>
    public Action<string>? OnWarning { get; set; }

    /// <summary>Passes <paramref name="message"/> to <see cref="OnWarning"/>; an exception the handler throws is traced, not passed on.</summary>
    internal void Warn(string message)
    {
        if (OnWarning is not { } w)
        {
            System.Diagnostics.Trace.WriteLine(message);
            return;
        }
        try { w(message); }
        catch (Exception e) { System.Diagnostics.Trace.WriteLine($"DomainOptions.OnWarning threw {e.GetType().Name} ({e.Message}) for: {message}"); }
    }

    /// <summary>
    /// Checkpoint once this fraction of the log is placed but not checkpointed (default 0.5). Each
    /// checkpoint syncs every segment page dirtied since the last one, so rarer checkpoints cost less per
    /// transaction; the rest of the log absorbs what is written while a checkpoint runs. Clamped to 0.01..0.9;
    /// NaN is refused at open.
    /// </summary>
    public double CheckpointFraction { get; set; } = 0.5;

    /// <summary>
    /// Checkpoint at least this often while there is something placed (default 30 s). Under load the log
    /// fill (<see cref="CheckpointFraction"/>) triggers checkpoints; this catches up a quiet domain. A
    /// checkpoint's cost is set by the pages it writes out (each page changed since the last one, whole), not
    /// the bytes placed, so a short interval under load only repeats that work: at 1 s it cost a b+tree insert
    /// workload a fifth of its throughput. Replay after a crash is bounded by the log fill either way.
    /// Must be positive (refused at open otherwise); read once, at open.
    /// </summary>
    public TimeSpan CheckpointInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// For tests: keep a shadow copy of every segment and check at every seal that no byte changed
    /// outside the group's captured regions (a write without a capture, or before it, which an abort
    /// cannot undo and recovery cannot replay). Costs a full compare of the segment per seal.
    /// Violations go to <see cref="OnWarning"/> and <see cref="Domain.CaptureViolations"/>.
    /// </summary>
    public bool VerifyCaptures { get; set; }

    /// <summary>Seal a group once its transactions have reserved this many log bytes (default: 4 MiB or what one record holds).</summary>
    public long GroupBoundBytes { get; set; } = 4L << 20;

    /// <summary>
    /// Seal a group once it holds this many transactions (default 128). Small groups are sealed while the
    /// bytes they copy and checksum are still in cache, and the log writer gets work sooner; a record still
    /// gathers every group sealed while the previous one was being written.
    /// </summary>
    public int GroupBoundTxs { get; set; } = 128;

    /// <summary>
    /// Tests only: runs as the log writer starts, on the opening thread, with the domain being opened (its placer already
    /// started); an exception it throws is the writer's start failing, as a thread that cannot start would.
    /// </summary>
    internal Action<Domain>? LogWriterStarting { get; set; }
}
