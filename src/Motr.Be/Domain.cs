using System.Diagnostics;
using Motr.Be.Log;
using Motr.Be.Placing;
using Motr.Be.Recovery;
using Motr.Be.Segments;
using Motr.Be.Storage;
using Motr.Be.Tx;

namespace Motr.Be;

/// <summary>Log, placing and transaction counters of a domain.</summary>
/// <param name="Log">The log writer's counters.</param>
/// <param name="Placing">The placer's counters.</param>
/// <param name="LogUsed">Log bytes between the checkpoint and the end of the written log.</param>
/// <param name="LogReserved">Log bytes reserved by open transactions and unwritten groups.</param>
/// <param name="LogAreaSize">Size of the log's record area.</param>
public readonly record struct DomainStats(LogWriterStats Log, PlacerStats Placing, long LogUsed, long LogReserved, long LogAreaSize);

/// <summary>
/// One per node process: the log, the segments, the log writer and the placer. Opening a domain runs
/// recovery. Each segment is then attached to its owner (a locality) which opens transactions on it.
/// Opened with <see cref="DomainOptions.ReadOnly"/>, it writes nothing: recovery replays into memory only, and no
/// transaction opens.
/// </summary>
public sealed class Domain : IAsyncDisposable
{
    private readonly IStorage _storage;
    private readonly IDisposable _folderLock;
    private readonly LogFile _log;
    private readonly Segment[] _segments;
    private readonly Placer _placer;
    private Exception? _failure;
    private readonly CloseOnce _close = new(); // the first DisposeAsync's close, which later calls wait for
    private long _invariantViolations;

    internal readonly LogSpace LogSpace;
    internal readonly LogWriter Writer;
    internal readonly DomainOptions Options;
    internal readonly long MaxRecordSize;
    internal readonly long MaxTxReservation;
    internal readonly long MaxGroupReservation;
    internal readonly long GroupBoundBytes;
    internal readonly int GroupBoundTxs;
    internal readonly long SpaceChunk;
    internal readonly long CheckpointBytes;
    internal readonly TimeSpan CheckpointInterval;

    /// <summary>Opens the domain described by <paramref name="options"/>, creating it if allowed and missing, and runs recovery.</summary>
    /// <exception cref="BeCorruptionException">A file is damaged; the message names it and the offset.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of its range (<see cref="DomainOptions.CheckpointInterval"/> not
    /// positive, <see cref="DomainOptions.CheckpointFraction"/> not a number, or a size or count of a new domain); the message names it.</exception>
    public static Domain Open(DomainOptions options) => Open(options, CancellationToken.None);

    private static Domain Open(DomainOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        CheckOptions(options);
        cancellationToken.ThrowIfCancellationRequested();
        // A read-only open creates no folder either (a missing one: DirectoryNotFoundException).
        IStorage storage = new SyncFailureLatch(options.Storage ?? new FileStorage(options.Path ?? throw new ArgumentException("DomainOptions needs a Path or a Storage"),
            createIfMissing: !options.ReadOnly));
        bool create = options.CreateIfMissing && !options.ReadOnly;
        if (!create && !storage.Exists(BeConstants.LogFileName)) ThrowNoDomain(storage);
        // Before anything is read: a second engine on the folder would replay and write the same log. A reader shares the
        // folder with readers only: an engine's writes under it would make it see a domain half-changed.
        var folderLock = options.ReadOnly ? storage.LockShared() : storage.Lock();
        try
        {
            bool created = false;
            if (!storage.Exists(BeConstants.LogFileName))
            {
                if (!create) ThrowNoDomain(storage);
                Create(storage, options, cancellationToken);
                created = true;
            }
            return new Domain(storage, options, created, folderLock, cancellationToken);
        }
        catch
        {
            folderLock.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Opens the domain on a thread-pool thread (recovery does file I/O). Cancelled before recovery records its
    /// checkpoint, it stops (before the next segment it loads, the next record it replays, the next sector the search
    /// for the log's end reads, or the next segment file the checkpoint syncs), releases the files and the folder, and
    /// the task is cancelled: the checkpoint has not moved, so the next open replays every record again. Cancelled
    /// after, the open completes and returns the domain (the next open would replay nothing).
    /// </summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before recovery's
    /// checkpoint was recorded (the task is cancelled).</exception>
    /// <exception cref="BeCorruptionException">A file is damaged (the task faults).</exception>
    public static Task<Domain> OpenAsync(DomainOptions options, CancellationToken cancellationToken = default) =>
        Task.Run(() => Open(options, cancellationToken), cancellationToken);

    /// <summary>
    /// Refuses options the engine's threads cannot use, at open, where the caller sees it: a checkpoint interval that is
    /// not positive made the placer's wait throw on its own thread (ending the process) or spin.
    /// </summary>
    private static void CheckOptions(DomainOptions o)
    {
        if (o.CheckpointInterval <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(o.CheckpointInterval), o.CheckpointInterval, "DomainOptions.CheckpointInterval must be positive");
        if (double.IsNaN(o.CheckpointFraction))
            throw new ArgumentOutOfRangeException(nameof(o.CheckpointFraction), o.CheckpointFraction, "DomainOptions.CheckpointFraction must be a number (it is clamped to 0.01..0.9)");
    }

    /// <summary>
    /// Refuses to open a folder without a log. Segment files that hold transactions there are a domain whose log is lost:
    /// damage (<see cref="BeCorruptionException"/> naming the log and the segment), not a folder without a domain.
    /// </summary>
    private static void ThrowNoDomain(IStorage storage)
    {
        foreach (var name in storage.List())
            if (name.StartsWith("seg-", StringComparison.Ordinal) && !name.EndsWith(".new", StringComparison.Ordinal) && !Segment.IsUnused(storage, name))
                throw new BeCorruptionException($"{storage.Location}/{BeConstants.LogFileName}", 0,
                    $"the log is missing, but segment file {name} holds transactions: the domain's log is lost (restore it; no new domain is created over the segments)");
        throw new BeException($"{storage.Location}: no domain here (no {BeConstants.LogFileName}) and CreateIfMissing is off");
    }

    /// <summary>
    /// Creates the domain's files. Cancelled before the log is renamed into place (the token is looked at before each
    /// segment file and as the log is zeroed), the creation stops and removes what it made, as the next open would.
    /// </summary>
    private static void Create(IStorage storage, DomainOptions o, CancellationToken cancellationToken)
    {
        if (o.Segments < 1 || o.Segments > 1024) throw new ArgumentOutOfRangeException(nameof(o.Segments), $"{o.Segments} segments: must be 1 to 1024");
        RemoveInterruptedCreation(storage);
        ulong domainId = (ulong)Random.Shared.NextInt64(1, long.MaxValue);
        try
        {
            for (int i = 1; i <= o.Segments; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                Segment.CreateFile(storage, (ulong)i, domainId, o.SegmentSize, Math.Max(o.SegmentMaxSize, o.SegmentSize));
            }
            // The log last: its rename into place is the commit point of creation.
            LogFile.Create(storage, domainId, o.LogSize, (uint)o.Segments, cancellationToken);
        }
        catch (OperationCanceledException)
        {
            // The files of a creation that never committed hold nothing; should removing them fail, the next open
            // removes them (it is an interrupted creation), and the caller hears of the cancellation, not of that.
            try { RemoveInterruptedCreation(storage); }
            catch (Exception e) when (e is IOException or BeException or UnauthorizedAccessException) { }
            throw;
        }
    }

    /// <summary>
    /// A folder with no log never held a complete domain, unless its log was lost. Temporary files and
    /// segments that never held a transaction are what an interrupted creation leaves: remove them.
    /// A segment that holds transactions without a log is refused — it is data, and its log is missing.
    /// </summary>
    private static void RemoveInterruptedCreation(IStorage storage)
    {
        var names = storage.List();
        foreach (var name in names)
        {
            if (!name.StartsWith("seg-", StringComparison.Ordinal) && name != BeConstants.LogFileName + ".new") continue;
            if (name.EndsWith(".new", StringComparison.Ordinal))
            {
                storage.Delete(name);
                continue;
            }
            if (!Segment.IsUnused(storage, name))
                throw new BeException($"{storage.Location}: segment file {name} holds transactions but there is no {BeConstants.LogFileName}: " +
                    "the log is missing; refusing to create a new domain over existing data");
        }
        foreach (var name in names)
            if (name.StartsWith("seg-", StringComparison.Ordinal) && !name.EndsWith(".new", StringComparison.Ordinal)) storage.Delete(name);
    }

    private Domain(IStorage storage, DomainOptions options, bool created, IDisposable folderLock, CancellationToken cancellationToken)
    {
        _storage = storage;
        _folderLock = folderLock;
        Options = options;
        ReadOnly = options.ReadOnly;
        _log = LogFile.Open(storage, ReadOnly);
        var segments = new List<Segment>();
        try
        {
            uint count = _log.SegmentCount;
            for (uint i = 1; i <= count; i++)
            {
                // Loading reads the whole segment: a caller that gave up does not wait for every other one.
                cancellationToken.ThrowIfCancellationRequested();
                string name = BeConstants.SegmentFileName(i);
                if (!storage.Exists(name)) throw new BeCorruptionException($"{storage.Location}/{name}", 0, $"segment {i} of {count} is missing");
                segments.Add(Segment.Load(storage, name, _log.DomainId, this));
            }
            if (options.Segments > count && !ReadOnly)
            {
                // More localities than segments: add segments. They are empty, so no log record names them yet.
                for (uint i = count + 1; i <= (uint)options.Segments; i++)
                {
                    // A file left by an interrupted add is replaced; one that holds transactions is not: the log
                    // header counting fewer segments than the folder holds is damage, not a reason to lose a segment.
                    string name = BeConstants.SegmentFileName(i);
                    if (storage.Exists(name) && !Segment.IsUnused(storage, name))
                        throw new BeCorruptionException($"{storage.Location}/{name}", 0,
                            $"the log header counts {count} segments, but segment {i} exists and holds transactions: refusing to replace it");
                    Segment.CreateFile(storage, i, _log.DomainId, options.SegmentSize, Math.Max(options.SegmentMaxSize, options.SegmentSize));
                    segments.Add(Segment.Load(storage, BeConstants.SegmentFileName(i), _log.DomainId, this));
                }
                // The log header learns the new count only after recovery (below): written now, it would go into the
                // next header slot, which may be the damaged newest one whose loss recovery must still be able to see.
            }
            _segments = segments.ToArray();

            long area = _log.AreaSize;
            MaxRecordSize = Math.Min(area / 4 / BeConstants.SectorSize * BeConstants.SectorSize, 256L << 20);
            MaxGroupReservation = 2 * (MaxRecordSize - RecordHeader.SizeOf - BeConstants.SectorSize); // reservations are doubled (LogFormat.Reservation)
            MaxTxReservation = MaxGroupReservation;
            GroupBoundBytes = Math.Clamp(options.GroupBoundBytes, 4096, MaxGroupReservation);
            GroupBoundTxs = Math.Max(1, options.GroupBoundTxs);
            SpaceChunk = Math.Clamp(area / (16L * _segments.Length), 4096, 1L << 20);
            CheckpointInterval = options.CheckpointInterval;
            CheckpointBytes = Math.Max(BeConstants.SectorSize, (long)(area * Math.Clamp(options.CheckpointFraction, 0.01, 0.9)));

            // Read-only: the placer opens no segment file (it never runs), and recovery replays into memory only.
            _placer = new Placer(this, _log, storage, ReadOnly ? [] : _segments.Select(s => s.Id), _log.CheckpointPosition, _log.CheckpointLsn, cancellationToken);
            var byId = _segments.ToDictionary(s => s.Id);
            var report = new LogRecovery(_log, byId, ReadOnly ? null : _placer, options, MaxRecordSize).Run(cancellationToken);
            // Until this is durable the added files are an interrupted add's, which the next open replaces.
            if (_segments.Length > _log.SegmentCount) _log.SetSegmentCount((uint)_segments.Length);
            Recovery = created ? new RecoveryReport { Created = true, EndPosition = report.EndPosition, NextLsn = report.NextLsn } : report;
            if (report.DamagedHeaderSlot is { } slot)
                options.Warn($"{storage.Location}/{BeConstants.LogFileName}: {slot}; the other header slot's checkpoint was used, and the damaged slot " +
                    (ReadOnly ? "left as it is (read-only)" : "rewritten"));
            foreach (var s in _segments)
            {
                s.VerifyHeaderBlocks($"{storage.Location}/{s.FileName}");
                _ = s.Allocator; // verifies the allocator state against this build and the segment
                s.Tx.InitFromHeader();
            }
            // A begin that waits for space: placing should checkpoint soon, and every locality (asleep ones too) gives back the
            // space it keeps for its own next begin.
            LogSpace = new LogSpace(area, report.EndPosition) { OnWaiter = OnSpaceWaiter };
            Writer = new LogWriter(this, _log, _placer, report.EndPosition, report.NextLsn);
            if (!ReadOnly)
            {
                _placer.Start();
                Writer.Start();
            }
        }
        catch
        {
            // The placer's threads may run (the writer's start failed after theirs): they are stopped before their
            // files close, or they would outlive the failed open. Recovery checkpointed what it placed before they started:
            // the stop's final checkpoint has nothing to add.
            _placer?.Stop();
            _placer?.Dispose();
            foreach (var s in segments) s.Dispose();
            _log.Dispose();
            throw;
        }
    }

    private void OnSpaceWaiter()
    {
        _placer.RequestCheckpoint();
        foreach (var s in _segments) s.Tx.RequestSpaceRelease();
    }

    /// <summary>Whether a thread of the placer is running (tests: none is, once the domain is closed or its open failed).</summary>
    internal bool PlacerRunning => _placer.Running;

    /// <summary>The segments, in id order (id = index + 1).</summary>
    public IReadOnlyList<Segment> Segments => _segments;

    /// <summary>What recovery did when the domain opened.</summary>
    public RecoveryReport Recovery { get; }

    /// <summary>Whether the domain was opened with <see cref="DomainOptions.ReadOnly"/>: it writes nothing, and opens no transaction.</summary>
    public bool ReadOnly { get; }

    /// <summary>Where the domain lives.</summary>
    public string Location => _storage.Location;

    /// <summary>Set once the log or placing failed; every later transaction fails with it.</summary>
    public Exception? Failure => Volatile.Read(ref _failure);

    /// <summary>With <see cref="DomainOptions.VerifyCaptures"/>: bytes found changed outside any capture, one line per range.</summary>
    public IReadOnlyList<string> CaptureViolations
    {
        get { lock (_captureViolations) return _captureViolations.ToArray(); }
    }

    private readonly List<string> _captureViolations = new();

    internal void ReportCaptureViolation(string what)
    {
        lock (_captureViolations) _captureViolations.Add(what);
        Options.Warn(what);
    }

    /// <summary>Transactions the engine aborted because they stayed open across a turn (each a caller bug).</summary>
    public long InvariantViolations => Volatile.Read(ref _invariantViolations);

    /// <summary>Counters of the log, placing and log space.</summary>
    public DomainStats Stats => new(Writer.Stats, _placer.Stats, LogSpace.Used, LogSpace.Reserved, LogSpace.AreaSize);

    /// <summary>Places and syncs everything durable so far and advances the checkpoint.</summary>
    /// <exception cref="LogFailedException">The domain failed (the task faults with its failure).</exception>
    /// <exception cref="ObjectDisposedException">The domain is closed (the task faults).</exception>
    /// <exception cref="InvalidOperationException">The domain is open read-only (the task faults): it writes no checkpoint.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (the task is cancelled):
    /// already cancelled, no checkpoint is asked for; cancelled while waiting, the caller stops waiting and the checkpoint
    /// asked for still completes in the background (a checkpoint is never left half-written).</exception>
    public Task CheckpointAsync(CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested) return Task.FromCanceled(cancellationToken);
        if (ReadOnly)
            return Task.FromException(new InvalidOperationException($"{Location}: the domain is open read-only (DomainOptions.ReadOnly): it writes no checkpoint"));
        var checkpoint = _placer.CheckpointAsync();
        if (!cancellationToken.CanBeCanceled || checkpoint.IsCompleted) return checkpoint;
        // A caller that gives up no longer observes the checkpoint's outcome: observe a failure here, so that it does
        // not reach TaskScheduler.UnobservedTaskException.
        checkpoint.ContinueWith(static t => _ = t.Exception, CancellationToken.None,
            TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return checkpoint.WaitAsync(cancellationToken);
    }

    /// <summary>
    /// Held while a checkpoint is recorded and while the domain is marked failed: a checkpoint being written
    /// finishes before the failure is set, and none is written after it (see <see cref="Placing.Placer"/>).
    /// </summary>
    internal readonly object CheckpointGate = new();

    internal void Fail(Exception e)
    {
        lock (CheckpointGate)
        {
            if (Interlocked.CompareExchange(ref _failure, e, null) != null) return;
        }
        Options.Warn($"domain {Location} failed: {e.Message}");
        foreach (var s in _segments) s.Tx.OnFailure();
        LogSpace.FailWaiters();
    }

    internal void ReportInvariantViolation(Segment segment, Transaction tx)
    {
        Interlocked.Increment(ref _invariantViolations);
        string msg = $"segment {segment.Id}: a transaction captured changes and was still open at the end of its turn (an await between open and close); it was aborted (DESIGN invariant 1)";
        Options.Warn(msg);
    }

    /// <summary>
    /// Closes the domain: seals what the segments' open groups hold, writes and places everything,
    /// checkpoints, and releases files and memory. Call after the owners have stopped (the runtime's
    /// engine does); continuations still waiting on persistence are not run. A call made while another is closing the
    /// domain returns once that close has finished (files and the folder's lock released), not before; only the first
    /// call reports an error of the close.
    /// </summary>
    public ValueTask DisposeAsync() => _close.Run(CloseAsync);

    private async Task CloseAsync()
    {
        await Task.Run(() =>
        {
            // Whatever fails on the way, the threads are stopped before anything they use is released, and the files,
            // memory and the folder's lock are released (the lock last).
            try
            {
                foreach (var s in _segments) s.Tx.SealOnClose();
            }
            finally
            {
                try { StopThreads(); }
                finally { Release(); }
            }
        }).ConfigureAwait(false);
    }

    /// <summary>Stops the log writer and the placer (the placer even if the writer's stop fails), then settles persistence tasks.</summary>
    private void StopThreads()
    {
        if (ReadOnly)
        {
            // Neither thread was started: nothing to write or place.
            foreach (var s in _segments) s.Tx.CloseTasks();
            return;
        }
        try { Writer.Stop(); }
        finally
        {
            _placer.Stop();
            foreach (var s in _segments) s.Tx.CloseTasks();
            // Begins still waiting for space: nothing will free it now. Their waits end, and leave their tokens.
            LogSpace.Close(new ObjectDisposedException(nameof(Domain), $"{Location}: the domain closed while a transaction waited for log space"));
        }
    }

    /// <summary>Releases files and memory, and the folder's lock last, whatever fails before it.</summary>
    private void Release()
    {
        try
        {
            _placer.Dispose();
            _log.Dispose();
            foreach (var s in _segments) s.Dispose();
        }
        finally
        {
            _folderLock.Dispose();
        }
    }
}
