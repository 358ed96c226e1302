namespace Motr.Be.Tx;

internal sealed partial class TxManager
{
    private struct Waiter
    {
        public long Seq;
        public Action Continuation;
    }

    private long _durableSeq;          // owner's view
    private long _writerDurableSeq;    // written by the log writer
    private int _completionPosted;
    private Waiter[] _waiters = new Waiter[64];
    private int _waiterCount;
    private Waiter[] _spare = new Waiter[64];

    public bool IsDurable(long seq) => Volatile.Read(ref _writerDurableSeq) >= seq || _domain.Failure is not null;

    public void ThrowIfFailed(long seq)
    {
        if (Volatile.Read(ref _writerDurableSeq) >= seq) return;
        if (_domain.Failure is { } f) throw new LogFailedException($"segment {Segment.Id}: group {seq} was not made durable: {f.Message}", f);
        bool closed;
        lock (_taskGate) closed = _tasksClosed;
        if (closed) throw new ObjectDisposedException(Segment.FileName, $"segment {Segment.Id}: the domain closed before group {seq} was made durable");
        throw new InvalidOperationException("GetResult called before the persistence completed");
    }

    public void AddWaiter(long seq, Action continuation, bool flowContext)
    {
        var owner = _owner!;
        if (!owner.IsOwnerThread)
        {
            // Awaited off the owner (another locality, the thread pool): resume where the awaiter runs — its
            // SynchronizationContext (its own locality), else the thread pool — not on this segment's owner, which
            // would run the rest of another locality's operation on this thread (outside its owner, racing it), and
            // never through the owner's queue, dropped once the owner stops (the await would never resume). The
            // persistence task completes when the group is durable, the log fails or the domain closes.
            var awaiter = PersistedTask(seq).GetAwaiter();
            if (flowContext) awaiter.OnCompleted(continuation);
            else awaiter.UnsafeOnCompleted(continuation);
            return;
        }
        if (IsDurable(seq))
        {
            owner.Post(static s => ((Action)s!)(), continuation);
            return;
        }
        if (_waiterCount == _waiters.Length) Array.Resize(ref _waiters, _waiters.Length * 2);
        _waiters[_waiterCount++] = new Waiter { Seq = seq, Continuation = continuation };
    }

    // Tasks of TxPersistence.AsTask: completed where the outcome becomes known (the log writer's thread, a failure,
    // the domain's close), never through the owner, whose queue is dropped once it stops — a task awaited off the
    // owner must not hang because the engine closed.
    private readonly object _taskGate = new();
    private readonly List<(long Seq, TaskCompletionSource Tcs)> _tasks = new();
    private int _taskCount;
    private bool _tasksClosed;

    public Task PersistedTask(long seq)
    {
        if (IsDurable(seq))
            return _domain.Failure is not null && Volatile.Read(ref _writerDurableSeq) < seq ? Task.FromException(_domain.Failure) : Task.CompletedTask;
        var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_taskGate)
        {
            _tasks.Add((seq, tcs));
            Volatile.Write(ref _taskCount, _tasks.Count);
        }
        CompleteTasks(); // the outcome may have become known since IsDurable
        return tcs.Task;
    }

    /// <summary>Completes the persistence tasks whose outcome is known: durable, failed, or the domain closed first.</summary>
    private void CompleteTasks()
    {
        // A full fence: the log writer's store of its durable sequence must not pass this read of the count
        // (a task registered meanwhile reads the sequence under the lock, after its own store).
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref _taskCount) == 0) return;
        lock (_taskGate)
        {
            long durable = Volatile.Read(ref _writerDurableSeq);
            var failure = _domain.Failure;
            int keep = 0; // one pass, compacting: this runs on the log writer's thread
            for (int i = 0; i < _tasks.Count; i++)
            {
                var (seq, tcs) = _tasks[i];
                if (seq <= durable) tcs.TrySetResult();
                else if (failure is not null) tcs.TrySetException(new LogFailedException($"segment {Segment.Id}: group {seq} was not made durable: {failure.Message}", failure));
                else if (_tasksClosed) tcs.TrySetException(new ObjectDisposedException(Segment.FileName, $"segment {Segment.Id}: the domain closed before group {seq} was made durable"));
                else _tasks[keep++] = _tasks[i];
            }
            _tasks.RemoveRange(keep, _tasks.Count - keep);
            Volatile.Write(ref _taskCount, keep);
        }
    }

    /// <summary>The domain has closed (its log writer stopped): persistence tasks still waiting get their outcome now.</summary>
    internal void CloseTasks()
    {
        lock (_taskGate) _tasksClosed = true;
        CompleteTasks();
    }

    /// <summary>Log writer thread: group <paramref name="seq"/> (and all before it) is durable.</summary>
    internal void OnGroupDurable(long seq)
    {
        Volatile.Write(ref _writerDurableSeq, seq);
        PostCompletion();
        CompleteTasks();
    }

    /// <summary>Any thread: the domain failed; wake every waiter so it observes the failure.</summary>
    internal void OnFailure()
    {
        PostCompletion();
        CompleteTasks();
    }

    private void PostCompletion()
    {
        if (_owner is not null && Interlocked.Exchange(ref _completionPosted, 1) == 0) _owner.Post(s_complete, this);
    }

    private static readonly Action<object?> s_complete = static s => ((TxManager)s!).RunCompletions();

    private void RunCompletions()
    {
        // A full fence, not a release store: the read of _writerDurableSeq below must not pass the clearing
        // of the flag. With a plain store the CPU may read the old sequence first while the log writer, its
        // Exchange still seeing 1, posts nothing — the group's waiters then sleep forever (seen as a hung
        // insert bench: _writerDurableSeq one ahead of _durableSeq, flag 0, waiters pending).
        Interlocked.Exchange(ref _completionPosted, 0);
        long durable = Volatile.Read(ref _writerDurableSeq);
        bool failed = _domain.Failure is not null;
        if (durable > _durableSeq) _durableSeq = durable;
        if (_waiterCount == 0) return;
        // The log writer has just finished a record and will want the next one: hand it what closed
        // meanwhile before running the continuations, so it writes while they run. Sealed after them,
        // the group would wait for all of them with the writer idle, and the continuations' own
        // transactions would then wait for that write with this locality idle.
        if (CanSeal && !failed) Seal();

        var run = _waiters;
        int n = _waiterCount;
        _waiters = _spare;
        _waiterCount = 0;
        for (int i = 0; i < n; i++)
        {
            var w = run[i];
            run[i] = default;
            if (w.Seq <= durable || failed)
            {
                // Each continuation is a turn of its own.
                w.Continuation();
                EndTurn();
            }
            else
            {
                if (_waiterCount == _waiters.Length) Array.Resize(ref _waiters, _waiters.Length * 2);
                _waiters[_waiterCount++] = w;
            }
        }
        _spare = run;
    }
}
