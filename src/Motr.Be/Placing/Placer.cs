using System.Buffers.Binary;
using System.Diagnostics;
using Motr.Be.Log;
using Motr.Be.Segments;
using Motr.Be.Storage;

namespace Motr.Be.Placing;

/// <summary>
/// Placing: writes the bytes of durable log records in place into the segment files, taking them
/// from the record (never from live segment memory, which may hold changes not yet logged), syncs the
/// segment files in batches, then advances the checkpoint so the log space can be reused
/// (DESIGN invariants 3 and 4). Runs on its own thread; recovery uses the same code synchronously.
/// </summary>
internal sealed class Placer : IDisposable
{
    private sealed class SegmentFile(IStorageFile file)
    {
        public readonly IStorageFile File = file;
        public long Length = file.Length;
        public bool Dirty;
        // Checksums to compute in the file before the next checkpoint (ChecksumDesc), by block; latest wins.
        public readonly Dictionary<long, ChecksumDesc> PendingChecksums = new();
    }

    private readonly Domain _domain;
    private readonly LogFile _log;
    private readonly Dictionary<ulong, SegmentFile> _files = new();
    private readonly Lock _lock = new();
    private List<DurableRecord> _queue = new();
    private List<DurableRecord> _work = new();
    // Callers of CheckpointAsync, each with the end of the records handed over before its call (Target): it is taken by
    // the first checkpoint that covers them, not by one the placer starts midway through them.
    private readonly List<(long Target, TaskCompletionSource Tcs)> _checkpointWaiters = new();
    private long _enqueuedEnd; // under _lock: the end of the last record handed over
    private readonly ManualResetEventSlim _signal = new(false, spinCount: 1);
    private readonly SemaphoreSlim _syncStart = new(0);
    private Thread? _thread, _syncThread;
    private volatile bool _stopping;
    private volatile bool _checkpointRequested;
    private long _placedEnd;
    private ulong _placedNextLsn;
    private long _checkpointed;
    private long _lastCheckpoint = Stopwatch.GetTimestamp();

    // The checkpoint in flight: what it will record once its segment syncs are done. Placing goes on
    // meanwhile — the files may receive newer logged bytes than the checkpoint claims, which recovery
    // replays again (replay is idempotent) — so a slow sync never stalls placing.
    private volatile bool _syncing;
    private bool _stopped; // under _lock: the placing thread has finished
    private long _syncPosition;
    private ulong _syncLsn;
    private readonly List<SegmentFile> _syncFiles = new();
    private readonly List<TaskCompletionSource> _syncWaiters = new();

    private const int PrefetchDistance = 8;

    // Counters.
    private long _recordsPlaced, _regionsPlaced, _bytesPlaced, _checkpoints, _checksums;
    private long _checkpointTicks; // segment syncs and checkpoint records, on whichever thread wrote them
    private byte[] _block = new byte[4096];

    /// <summary>
    /// Opens every segment file for placing (a staged file reads the whole segment); <paramref name="cancellationToken"/>
    /// (the open's) is looked at before each.
    /// </summary>
    public Placer(Domain domain, LogFile log, IStorage storage, IEnumerable<ulong> segmentIds, long position, ulong lsn,
        CancellationToken cancellationToken = default)
    {
        _domain = domain;
        _log = log;
        try
        {
            foreach (var id in segmentIds)
            {
                cancellationToken.ThrowIfCancellationRequested();
                _files.Add(id, new SegmentFile(storage.Open(BeConstants.SegmentFileName(id), StorageOpenMode.OpenExisting, StorageAccess.ScatteredWrites)));
            }
        }
        catch
        {
            // The domain never gets this placer to dispose: the files opened so far (each a staged copy of its
            // segment) are released here, or a failed open would keep them for the life of the process.
            Dispose();
            throw;
        }
        _placedEnd = _checkpointed = _enqueuedEnd = position;
        _placedNextLsn = lsn;
    }

    public PlacerStats Stats
    {
        get
        {
            long writtenBack = 0;
            foreach (var f in _files.Values) writtenBack += f.File.WrittenBack; // the set of files is fixed at open
            return new(Volatile.Read(ref _recordsPlaced), Volatile.Read(ref _regionsPlaced), Volatile.Read(ref _bytesPlaced),
                Volatile.Read(ref _checkpoints), Volatile.Read(ref _checksums),
                TimeSpan.FromTicks(Volatile.Read(ref _checkpointTicks) * TimeSpan.TicksPerSecond / Stopwatch.Frequency), writtenBack);
        }
    }

    public long CheckpointPosition => Volatile.Read(ref _checkpointed);

    /// <summary>Whether the placing or the checkpoint thread is running.</summary>
    public bool Running => (_thread?.IsAlive ?? false) || (_syncThread?.IsAlive ?? false);

    /// <summary>
    /// Starts the checkpoint thread, then the placing thread (which hands checkpoints to it). Each is kept only once
    /// started, so <see cref="Stop"/> joins exactly the threads that run, whether or not a start threw.
    /// </summary>
    public void Start()
    {
        var sync = new Thread(SyncLoop) { Name = "motr-checkpoint", IsBackground = true };
        sync.Start();
        _syncThread = sync;
        var run = new Thread(Run) { Name = "motr-placer", IsBackground = true };
        run.Start();
        _thread = run;
    }

    /// <summary>Log writer thread: a record is durable.</summary>
    public void Enqueue(DurableRecord r)
    {
        lock (_lock)
        {
            _queue.Add(r);
            _enqueuedEnd = r.End;
        }
        _signal.Set();
    }

    /// <summary>Asks for a checkpoint soon (someone waits for log space).</summary>
    public void RequestCheckpoint()
    {
        _checkpointRequested = true;
        _signal.Set();
    }

    /// <summary>Completes once every record handed to the placer before the call is placed, synced and checkpointed.</summary>
    public Task CheckpointAsync()
    {
        var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            if (_stopped) return Task.FromException(new ObjectDisposedException(nameof(Domain), $"{_log.Where}: the domain is closed: no checkpoint can be taken"));
            _checkpointWaiters.Add((_enqueuedEnd, tcs));
        }
        RequestCheckpoint();
        return tcs.Task;
    }

    /// <summary>Places what is queued, checkpoints, and stops the threads; of a placer never started (or only partly), stops what runs.</summary>
    public void Stop()
    {
        _stopping = true;
        _signal.Set();
        _thread?.Join();
        _syncStart.Release();
        _syncThread?.Join();
    }

    private void Run()
    {
        // The interval was validated (positive) and taken at open: the options object may be changed after. A wait longer
        // than ManualResetEventSlim accepts (int.MaxValue ms, about 24.8 days) waits that long and looks again.
        TimeSpan every = _domain.CheckpointInterval;
        long interval = (long)Math.Min(every.TotalSeconds * Stopwatch.Frequency, long.MaxValue / 2);
        TimeSpan wait = every.TotalMilliseconds < int.MaxValue ? every : TimeSpan.FromMilliseconds(int.MaxValue);
        while (true)
        {
            bool stopping = _stopping;
            lock (_lock) (_queue, _work) = (_work, _queue);
            // Each record's buffers go back to the pool exactly once, placed or not: the pool is shared by
            // every domain of the process, and a buffer returned twice would later be handed to two groups.
            foreach (var r in _work)
            {
                try
                {
                    if (_domain.Failure is null)
                    {
                        Place(r);
                        // Free log space as soon as enough is placed, not after the whole backlog.
                        if (_placedEnd - _checkpointed >= _domain.CheckpointBytes || _domain.LogSpace.HasWaiters) StartCheckpoint();
                    }
                }
                catch (Exception e)
                {
                    _domain.Fail(new LogFailedException($"placing failed: {e.Message}", e));
                }
                finally
                {
                    ReturnBuffers(r);
                }
            }
            _work.Clear();
            try
            {
                if (_domain.Failure is null)
                {
                    long pending = _placedEnd - _checkpointed;
                    bool due = pending > 0 && (pending >= _domain.CheckpointBytes || _domain.LogSpace.HasWaiters
                        || Stopwatch.GetTimestamp() - _lastCheckpoint >= interval);
                    if (due || _checkpointRequested) StartCheckpoint();
                }
            }
            catch (Exception e)
            {
                _domain.Fail(new LogFailedException($"placing failed: {e.Message}", e));
            }
            if (stopping)
            {
                while (_syncing) Thread.Sleep(1);
                try
                {
                    if (_domain.Failure is null) Checkpoint();
                }
                catch (Exception e)
                {
                    _domain.Fail(new LogFailedException($"final checkpoint failed: {e.Message}", e));
                }
                lock (_lock)
                {
                    _stopped = true; // a checkpoint asked for from now on is refused: nobody is left to take it
                    FailOrCompleteCheckpointWaiters();
                }
                return;
            }
            if (_domain.Failure is not null) FailOrCompleteCheckpointWaiters();
            if (_placedEnd == _checkpointed && !_checkpointRequested) _signal.Wait();
            else _signal.Wait(wait);
            _signal.Reset();
        }
    }

    /// <summary>Hands a checkpoint of everything placed so far to the checkpoint thread, unless one is in flight.</summary>
    private void StartCheckpoint()
    {
        if (_syncing || _domain.Failure is not null) return;
        _checkpointRequested = false;
        _syncPosition = _placedEnd;
        _syncLsn = _placedNextLsn;
        _syncFiles.Clear();
        foreach (var f in _files.Values)
        {
            if (!f.Dirty) continue;
            WriteChecksums(f);
            _syncFiles.Add(f);
            f.Dirty = false;
        }
        lock (_lock)
        {
            // Only the callers whose records this checkpoint covers: the placer may checkpoint midway through a backlog
            // (enough placed, or a wait for space), and a caller who asked after record B was durable must not hear that
            // the log is checkpointed when B is not placed yet. The others wait for a checkpoint after more is placed.
            int keep = 0;
            for (int i = 0; i < _checkpointWaiters.Count; i++)
            {
                if (_checkpointWaiters[i].Target <= _syncPosition) _syncWaiters.Add(_checkpointWaiters[i].Tcs);
                else _checkpointWaiters[keep++] = _checkpointWaiters[i];
            }
            _checkpointWaiters.RemoveRange(keep, _checkpointWaiters.Count - keep);
            if (keep > 0) _checkpointRequested = true;
        }
        _syncing = true;
        _syncStart.Release();
    }

    private void SyncLoop()
    {
        while (true)
        {
            _syncStart.Wait();
            if (!_syncing) return; // released by Stop with nothing in flight
            try
            {
                long t0 = Stopwatch.GetTimestamp();
                foreach (var f in _syncFiles) f.File.Flush();
                RecordCheckpoint(_syncPosition, _syncLsn);
                Interlocked.Add(ref _checkpointTicks, Stopwatch.GetTimestamp() - t0);
            }
            catch (Exception e)
            {
                _domain.Fail(new LogFailedException($"checkpoint failed: {e.Message}", e));
            }
            FailOrCompleteWaiters(_syncWaiters);
            _syncing = false;
            _signal.Set(); // the placer may start the next checkpoint
        }
    }

    /// <summary>The placer stopped (after its final checkpoint of everything placed) or the domain failed.</summary>
    private void FailOrCompleteCheckpointWaiters()
    {
        lock (_lock)
        {
            foreach (var (_, w) in _checkpointWaiters) FailOrComplete(w);
            _checkpointWaiters.Clear();
        }
    }

    private void FailOrCompleteWaiters(List<TaskCompletionSource> waiters)
    {
        lock (_lock)
        {
            foreach (var w in waiters) FailOrComplete(w);
            waiters.Clear();
        }
    }

    private void FailOrComplete(TaskCompletionSource w)
    {
        if (_domain.Failure is { } f) w.TrySetException(f);
        else w.TrySetResult();
    }

    /// <summary>Writes a durable record's regions into the segment files.</summary>
    public void Place(in DurableRecord r)
    {
        if (r.Groups is { } sealedGroups)
        {
            foreach (var g in sealedGroups)
            {
                var chunk = g.Buffer.AsSpan(0, g.Length);
                PlaceGroup(r, System.Runtime.InteropServices.MemoryMarshal.Read<GroupHeader>(chunk), chunk);
            }
        }
        else
        {
            var rec = r.Buffer!.AsSpan(0, r.Length);
            var h = System.Runtime.InteropServices.MemoryMarshal.Read<RecordHeader>(rec);
            var groups = new LogRecord.Groups(rec, h.GroupCount);
            while (groups.MoveNext(out var gh, out var chunk)) PlaceGroup(r, gh, chunk);
        }
        _placedEnd = r.End;
        _placedNextLsn = r.Lsn + 1;
        _recordsPlaced++;
    }

    private void PlaceGroup(in DurableRecord r, in GroupHeader gh, ReadOnlySpan<byte> chunk)
    {
        if (!_files.TryGetValue(gh.SegmentId, out var f))
            throw new BeCorruptionException(_log.Where, _log.Physical(r.Position), $"record lsn {r.Lsn} names segment {gh.SegmentId}, which the domain does not have");
        if (gh.SegmentSize > f.Length)
        {
            // Growth is made durable before any header saying so can reach the file.
            f.File.SetLength(gh.SegmentSize);
            f.File.Flush();
            f.Length = gh.SegmentSize;
        }
        var regions = new LogRecord.Regions(chunk, gh);
        // Regions land at random places in the file: ask for each destination a few regions ahead.
        var ahead = regions;
        for (int i = 0; i < PrefetchDistance && ahead.MoveNext(out long next, out var nextBytes); i++) f.File.Prefetch(next, nextBytes.Length);
        while (regions.MoveNext(out long offset, out var bytes))
        {
            if (ahead.MoveNext(out long next, out var nextBytes)) f.File.Prefetch(next, nextBytes.Length);
            f.File.Write(offset, bytes);
            _regionsPlaced++;
            _bytesPlaced += bytes.Length;
        }
        LogRecord.CollectMarks(chunk, gh, f.PendingChecksums);
        f.Dirty = true;
    }

    /// <summary>Gives back the buffers of a record handed over by the log writer.</summary>
    private static void ReturnBuffers(in DurableRecord r)
    {
        if (r.Groups is { } groups)
            foreach (var g in groups) BufferPool.Return(g.Buffer);
        else if (r.Buffer is { } b) BufferPool.Return(b);
    }

    /// <summary>
    /// Recovery after a truncation: the log goes on at <paramref name="nextLsn"/> (past every lsn left in the area), which
    /// the next checkpoint records with the position placing reached.
    /// </summary>
    internal void ContinueAt(ulong nextLsn)
    {
        if (nextLsn < _placedNextLsn) throw new ArgumentOutOfRangeException(nameof(nextLsn), nextLsn, $"below the next lsn {_placedNextLsn} placing expects");
        _placedNextLsn = nextLsn;
    }

    /// <summary>
    /// Syncs the segment files written since the last checkpoint and records a checkpoint, on the calling thread (recovery,
    /// close). <paramref name="cancellationToken"/> (recovery's) is looked at before each sync and before the record: a
    /// checkpoint stopped there has not moved, and the files' syncs so far are harmless.
    /// </summary>
    public void Checkpoint(CancellationToken cancellationToken = default)
    {
        _checkpointRequested = false;
        long t0 = Stopwatch.GetTimestamp();
        foreach (var f in _files.Values)
        {
            if (!f.Dirty) continue;
            cancellationToken.ThrowIfCancellationRequested();
            WriteChecksums(f);
            f.File.Flush();
            f.Dirty = false;
        }
        cancellationToken.ThrowIfCancellationRequested();
        RecordCheckpoint(_placedEnd, _placedNextLsn);
        Interlocked.Add(ref _checkpointTicks, Stopwatch.GetTimestamp() - t0);
    }

    /// <summary>
    /// Computes into the file the checksums the placed groups asked for (b+tree nodes), over the blocks as
    /// placing left them: once per block per checkpoint, however many groups changed it. Runs before the
    /// file is synced for a checkpoint, so a checkpoint never claims a file whose checksums are stale; a
    /// block changed again by a later group gets its checksum at the next checkpoint, or from recovery.
    /// </summary>
    private void WriteChecksums(SegmentFile f)
    {
        if (f.PendingChecksums.Count == 0) return;
        Span<byte> crc = stackalloc byte[4];
        foreach (var m in f.PendingChecksums.Values)
        {
            int length = (int)m.Length;
            if (m.Block + length > f.Length) continue; // the group's size was validated; the file has grown to at least that
            if (_block.Length < length) _block = new byte[Math.Max(length, _block.Length * 2)];
            var block = _block.AsSpan(0, length);
            if (f.File.Read(m.Block, block) < length) continue;
            // A place that no longer starts with the block's magic does not hold the block: leave it alone.
            if (BinaryPrimitives.ReadUInt32LittleEndian(block) != m.Magic) continue;
            BinaryPrimitives.WriteUInt32LittleEndian(crc, BlockChecksum.Compute(block, (int)m.CrcOffset));
            f.File.Write(m.Block + m.CrcOffset, crc);
            _checksums++;
        }
        f.PendingChecksums.Clear();
    }

    /// <summary>The segment files hold everything before <paramref name="position"/>: record it in the log header, then free the space.</summary>
    private void RecordCheckpoint(long position, ulong lsn)
    {
        if (position != Volatile.Read(ref _checkpointed) || _log.CheckpointLsn != lsn)
        {
            // A failed domain records no checkpoint: some file may hold placed bytes that no sync made durable —
            // one whose sync failed had its changes claimed by that checkpoint, and a later one would not sync it
            // again — and a checkpoint past them would let the log space holding their only durable copy be
            // reused. Under the gate, so that a failure set on another thread meanwhile waits for this write.
            lock (_domain.CheckpointGate)
            {
                if (_domain.Failure is { } failure) throw new LogFailedException($"{_log.Where}: no checkpoint after the domain failed", failure);
                _log.WriteCheckpoint(position, lsn);
            }
            Volatile.Write(ref _checkpointed, position);
            _domain.LogSpace?.MoveTail(position); // null while recovery runs
            _checkpoints++;
        }
        _lastCheckpoint = Stopwatch.GetTimestamp();
    }

    public void Dispose()
    {
        foreach (var f in _files.Values) f.File.Dispose();
    }
}

/// <summary>Counters of placing.</summary>
/// <param name="Records">Records placed.</param>
/// <param name="Regions">Regions written into segment files.</param>
/// <param name="Bytes">Bytes written into segment files.</param>
/// <param name="Checkpoints">Checkpoints written.</param>
/// <param name="Checksums">Block checksums computed in the segment files at placing (b+tree nodes, once per checkpoint each).</param>
/// <param name="CheckpointTime">
/// Time spent writing checkpoints: syncing the segment files (writing out their changed pages) and recording
/// the new checkpoint in the log. Checkpoints run beside placing and logging, so under load this is the share
/// of the time in which they compete with the log's syncs for the device. Counted as each checkpoint ends.
/// </param>
/// <param name="WrittenBack">
/// Bytes the segment files' flushes wrote to the device (whole changed pages, at checkpoints and when a
/// segment grows): with <see cref="Bytes"/>, what the device receives besides the log itself.
/// </param>
public readonly record struct PlacerStats(long Records, long Regions, long Bytes, long Checkpoints, long Checksums, TimeSpan CheckpointTime, long WrittenBack);
