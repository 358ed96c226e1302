using Motr.Be.Tx;

namespace Motr.Be.Log;

/// <summary>
/// Accounting of the log's record area, in logical bytes. Space is reserved when a transaction opens
/// (its credit's worst case), converted to used space when its record is written, and freed when the
/// placer advances the checkpoint past the record. Waiters are served in arrival order. Reservations
/// cover a record's possible skip to the next lap (see <see cref="LogFormat.Reservation"/>), so the whole
/// area is usable.
/// </summary>
internal sealed class LogSpace
{
    private sealed class SpaceWaiter(long bytes) : TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)
    {
        public readonly long Bytes = bytes;
        public CancellationTokenRegistration Registration;
    }

    private readonly Lock _lock = new();
    private readonly long _area;
    private long _head;
    private long _tail;
    private long _reserved;
    private readonly LinkedList<SpaceWaiter> _waiters = new();
    private bool _failed; // under _lock: FailWaiters ran, later waiters are released at once
    private Exception? _closed; // under _lock: Close ran, later waits fault with it
    private int _waiterCount;

    /// <summary>Called (outside the lock) when someone starts waiting: the placer should checkpoint soon, and localities give back what they keep.</summary>
    public Action? OnWaiter;

    public LogSpace(long areaSize, long position)
    {
        _area = areaSize;
        _head = _tail = position;
    }

    public bool HasWaiters => Volatile.Read(ref _waiterCount) > 0;

    /// <summary>Bytes between the checkpoint and the end of the written log.</summary>
    public long Used { get { lock (_lock) return _head - _tail; } }

    public long Reserved { get { lock (_lock) return _reserved; } }

    public long AreaSize => _area;

    private long Free => _area - (_head - _tail) - _reserved;

    public bool TryReserve(long n)
    {
        lock (_lock)
        {
            if (_waiterCount > 0 || Free < n) return false;
            _reserved += n;
            return true;
        }
    }

    public void Release(long n)
    {
        if (n == 0) return;
        lock (_lock)
        {
            _reserved -= n;
            GrantLocked();
        }
    }

    /// <summary>Completes when <paramref name="bytes"/> are reserved for the caller; the continuation goes through the caller's context.</summary>
    public Task WaitAsync(long bytes, ISegmentOwner owner, CancellationToken ct)
    {
        var w = new SpaceWaiter(bytes);
        lock (_lock)
        {
            if (_closed is not null)
            {
                w.TrySetException(_closed);
                return w.Task;
            }
            if (_failed)
            {
                // The domain failed after the caller checked: no space will be freed, and FailWaiters has run.
                // Granted at once, as FailWaiters grants, so the caller observes the failure and releases it.
                _reserved += bytes;
                w.TrySetResult();
                return w.Task;
            }
            _waiters.AddLast(w);
            _waiterCount++;
            GrantLocked();
        }
        if (!w.Task.IsCompleted)
        {
            OnWaiter?.Invoke();
            if (ct.CanBeCanceled)
            {
                w.Registration = ct.Register(static s =>
                {
                    var (space, waiter) = ((LogSpace, SpaceWaiter))s!;
                    bool removed;
                    lock (space._lock)
                    {
                        removed = space._waiters.Remove(waiter);
                        if (removed)
                        {
                            space._waiterCount--;
                            space.GrantLocked();
                        }
                    }
                    if (removed) waiter.TrySetCanceled();
                }, (this, w));
                // Granted between the queueing and the registration (GrantLocked found nothing to unregister): a
                // registration left on a long-lived token would stay in its list until the token went.
                if (w.Task.IsCompleted) w.Registration.Unregister();
            }
        }
        return w.Task;
    }

    /// <summary>A record was written: its groups' reservations become <paramref name="actual"/> used bytes (record plus any skip to the next lap).</summary>
    public void RecordWritten(long reserved, long actual)
    {
        lock (_lock)
        {
            _reserved -= reserved;
            _head += actual;
            GrantLocked();
        }
    }

    /// <summary>The checkpoint moved: everything before <paramref name="position"/> is placed and synced.</summary>
    public void MoveTail(long position)
    {
        lock (_lock)
        {
            _tail = position;
            GrantLocked();
        }
    }

    /// <summary>The domain failed: release every waiter (they observe the failure).</summary>
    public void FailWaiters()
    {
        lock (_lock)
        {
            _failed = true;
            EndWaits(null);
        }
    }

    /// <summary>
    /// The domain is closing (its owners have stopped, so no waiter's continuation will run): every wait still queued
    /// faults with <paramref name="reason"/> and leaves its token, as does any wait that starts after.
    /// </summary>
    public void Close(Exception reason)
    {
        lock (_lock)
        {
            _closed = reason;
            EndWaits(reason);
        }
    }

    /// <summary>
    /// Under the lock: ends every queued wait, granted (<paramref name="error"/> null: its bytes are reserved) or faulted.
    /// Each leaves the caller's token: a registration kept there would hold the waiter, this log space and the domain for
    /// as long as the token lives.
    /// </summary>
    private void EndWaits(Exception? error)
    {
        foreach (var w in _waiters)
        {
            w.Registration.Unregister();
            if (error is null)
            {
                _reserved += w.Bytes;
                w.TrySetResult();
            }
            else w.TrySetException(error);
        }
        _waiters.Clear();
        _waiterCount = 0;
    }

    private void GrantLocked()
    {
        while (_waiters.First is { } node && Free >= node.Value.Bytes)
        {
            _waiters.RemoveFirst();
            _waiterCount--;
            _reserved += node.Value.Bytes;
            node.Value.Registration.Unregister();
            node.Value.TrySetResult();
        }
    }
}
