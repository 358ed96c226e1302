using System.Collections.Concurrent;
using Motr.Be.Segments;
using Motr.Be.Tx;

namespace Motr.Runtime;

/// <summary>
/// A single-threaded cooperative executor: one dedicated thread running posted work items (turns)
/// one at a time, in order. It owns at most one segment, so the segment's memory needs no locks.
/// Code started with <see cref="RunAsync(Func{Task})"/> runs with the locality's
/// <see cref="SynchronizationContext"/>, so every <c>await</c> resumes on the locality.
/// </summary>
public sealed class Locality : ISegmentOwner, IAsyncDisposable
{
    private readonly struct WorkItem(Action<object?>? action, SendOrPostCallback? callback, object? state)
    {
        public readonly Action<object?>? Action = action;
        public readonly SendOrPostCallback? Callback = callback;
        public readonly object? State = state;
    }

    [ThreadStatic] private static Locality? t_current;

    private readonly ConcurrentQueue<WorkItem> _queue = new();
    private readonly ManualResetEventSlim _wake = new(false, spinCount: 50);
    private readonly Thread _thread;
    private readonly LocalitySynchronizationContext _context;
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _sleeping;
    private volatile bool _stopping;
    private long _turns;
    private long _faults;

    /// <summary>Starts a locality with its own thread.</summary>
    /// <param name="index">Index of the locality in its engine.</param>
    /// <param name="onFault">Receives exceptions that escape a work item; the locality keeps running.</param>
    public Locality(int index, Action<Locality, Exception>? onFault = null)
    {
        Index = index;
        OnFault = onFault;
        _context = new LocalitySynchronizationContext(this);
        _thread = new Thread(Run) { Name = $"motr-locality-{index}", IsBackground = true };
        _thread.Start();
    }

    /// <summary>Index of the locality in its engine.</summary>
    public int Index { get; }

    /// <summary>The segment this locality owns, if any.</summary>
    public Segment? Segment { get; private set; }

    /// <summary>The locality whose thread is running the caller, if any.</summary>
    public static Locality? Current => t_current;

    /// <summary>Turns run so far.</summary>
    public long Turns => Volatile.Read(ref _turns);

    /// <summary>Exceptions that escaped work items.</summary>
    public long Faults => Volatile.Read(ref _faults);

    /// <summary>Receives exceptions that escape a work item, on the locality's thread; an exception it throws is ignored (traced).</summary>
    public Action<Locality, Exception>? OnFault { get; set; }

    /// <inheritdoc />
    public bool IsOwnerThread => t_current == this;

    /// <summary>Whether the locality's thread has stopped (after <see cref="DisposeAsync"/>): nothing posted to it runs any more.</summary>
    public bool HasStopped => _stopped.Task.IsCompleted;

    /// <summary>Makes this locality the owner of <paramref name="segment"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="segment"/> is null.</exception>
    public void Attach(Segment segment)
    {
        ArgumentNullException.ThrowIfNull(segment);
        if (Segment != null) throw new InvalidOperationException($"locality {Index} already owns {Segment}");
        Segment = segment;
        segment.Attach(this);
    }

    /// <inheritdoc />
    /// <exception cref="ArgumentNullException"><paramref name="callback"/> is null.</exception>
    public void Post(Action<object?> callback, object? state)
    {
        ArgumentNullException.ThrowIfNull(callback);
        Enqueue(new WorkItem(callback, null, state));
    }

    internal void PostCallback(SendOrPostCallback callback, object? state) => Enqueue(new WorkItem(null, callback, state));

    private void Enqueue(in WorkItem item)
    {
        if (_stopping) return;
        _queue.Enqueue(item);
        if (Volatile.Read(ref _sleeping) == 1) _wake.Set();
    }

    // Operations started by RunAsync and not yet finished. A stopped locality drops what is posted to it, so an
    // operation still awaiting (a persistence wait, say) when the engine closes would never finish: DisposeAsync
    // fails them instead, and RunAsync on a stopped locality fails at once.
    private readonly HashSet<IRun> _runs = new();

    private interface IRun
    {
        void Abandon(Exception reason);
    }

    // An abandoned run's exception counts as observed: its only awaiter may be another abandoned run's dropped
    // continuation, and an unobserved fault would reach TaskScheduler.UnobservedTaskException.
    //
    // A run is its own posted state and holds what it runs, so starting one allocates only the run (its task is what
    // RunAsync returns): no closure for an Action or Func<T>, no task for their result, and no continuation for an
    // operation that completes in its first turn (most of them; one that awaits is finished by a continuation).
    private sealed class Run0 : TaskCompletionSource, IRun
    {
        private readonly Locality _owner;
        private readonly Func<Task>? _operation;
        private readonly Action? _action;

        public Run0(Locality owner, Func<Task>? operation, Action? action) : base(TaskCreationOptions.RunContinuationsAsynchronously)
        {
            _owner = owner;
            _operation = operation;
            _action = action;
        }

        public static readonly Action<object?> Start = static s => ((Run0)s!).Go();

        private void Go()
        {
            Task task;
            try
            {
                if (_action is not null)
                {
                    _action();
                    task = Task.CompletedTask;
                }
                else task = _operation!() ?? throw NoTask();
            }
            catch (Exception e) { _owner.End(this); TrySetException(e); return; }
            if (task.IsCompleted) Finish(task);
            else task.ContinueWith(static (x, o) => ((Run0)o!).Finish(x), this, TaskContinuationOptions.ExecuteSynchronously);
        }

        private void Finish(Task x)
        {
            _owner.End(this);
            if (x.IsFaulted) TrySetException(x.Exception!.InnerExceptions);
            else if (x.IsCanceled) TrySetCanceled();
            else TrySetResult();
        }

        public void Abandon(Exception reason)
        {
            TrySetException(reason);
            _ = Task.Exception;
        }
    }

    private sealed class Run1<T> : TaskCompletionSource<T>, IRun
    {
        private readonly Locality _owner;
        private readonly Func<Task<T>>? _operation;
        private readonly Func<T>? _func;

        public Run1(Locality owner, Func<Task<T>>? operation, Func<T>? func) : base(TaskCreationOptions.RunContinuationsAsynchronously)
        {
            _owner = owner;
            _operation = operation;
            _func = func;
        }

        public static readonly Action<object?> Start = static s => ((Run1<T>)s!).Go();

        private void Go()
        {
            Task<T> task;
            try
            {
                if (_func is not null)
                {
                    T result = _func();
                    _owner.End(this);
                    TrySetResult(result);
                    return;
                }
                task = _operation!() ?? throw NoTask();
            }
            catch (Exception e) { _owner.End(this); TrySetException(e); return; }
            if (task.IsCompleted) Finish(task);
            else task.ContinueWith(static (x, o) => ((Run1<T>)o!).Finish(x), this, TaskContinuationOptions.ExecuteSynchronously);
        }

        private void Finish(Task<T> x)
        {
            _owner.End(this);
            if (x.IsFaulted) TrySetException(x.Exception!.InnerExceptions);
            else if (x.IsCanceled) TrySetCanceled();
            else TrySetResult(x.Result);
        }

        public void Abandon(Exception reason)
        {
            TrySetException(reason);
            _ = Task.Exception;
        }
    }

    // An operation that returns null instead of a task: its run faults (as Task.Run does) rather than the null escaping
    // the turn as a locality fault and leaving the run pending until the locality stops.
    private static InvalidOperationException NoTask() => new("the operation run on the locality returned no task (null)");

    /// <summary>Adds a run to the pending set; false (and a faulted run) if the locality is stopping.</summary>
    private bool Begin(IRun run)
    {
        lock (_runs)
        {
            if (!_stopping)
            {
                _runs.Add(run);
                return true;
            }
        }
        run.Abandon(Stopped());
        return false;
    }

    private void End(IRun run)
    {
        lock (_runs) _runs.Remove(run);
    }

    private ObjectDisposedException Stopped() =>
        new(ToString(), $"{this} is stopped (its engine was closed): the operation did not run or did not finish; " +
            "transactions it had closed may or may not be persistent (reopen the engine to see)");

    // A null delegate is refused at the call, naming the parameter: a run holding none would fault later, inside the
    // turn, with a NullReferenceException that names nothing.

    /// <summary>Runs <paramref name="operation"/> on the locality; its awaits resume on the locality. Completes with its outcome.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="operation"/> is null (thrown, not in the task).</exception>
    /// <exception cref="ObjectDisposedException">The locality stopped before the operation finished (the task faults).</exception>
    public Task RunAsync(Func<Task> operation)
    {
        ArgumentNullException.ThrowIfNull(operation);
        return Start(new Run0(this, operation, null));
    }

    /// <summary>Runs <paramref name="operation"/> on the locality and returns its result.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="operation"/> is null (thrown, not in the task).</exception>
    /// <exception cref="ObjectDisposedException">The locality stopped before the operation finished (the task faults).</exception>
    public Task<T> RunAsync<T>(Func<Task<T>> operation)
    {
        ArgumentNullException.ThrowIfNull(operation);
        return Start(new Run1<T>(this, operation, null));
    }

    /// <summary>Runs <paramref name="action"/> on the locality as one turn.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="action"/> is null (thrown, not in the task).</exception>
    /// <exception cref="ObjectDisposedException">The locality is stopped (the task faults).</exception>
    public Task RunAsync(Action action)
    {
        ArgumentNullException.ThrowIfNull(action);
        return Start(new Run0(this, null, action));
    }

    /// <summary>Runs <paramref name="func"/> on the locality as one turn and returns its result.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="func"/> is null (thrown, not in the task).</exception>
    /// <exception cref="ObjectDisposedException">The locality is stopped (the task faults).</exception>
    public Task<T> RunAsync<T>(Func<T> func)
    {
        ArgumentNullException.ThrowIfNull(func);
        return Start(new Run1<T>(this, null, func));
    }

    private Task Start(Run0 run)
    {
        if (Begin(run)) Post(Run0.Start, run);
        return run.Task;
    }

    private Task<T> Start<T>(Run1<T> run)
    {
        if (Begin(run)) Post(Run1<T>.Start, run);
        return run.Task;
    }

    private void Run()
    {
        t_current = this;
        SynchronizationContext.SetSynchronizationContext(_context);
        while (true)
        {
            while (_queue.TryDequeue(out var item))
            {
                try
                {
                    if (item.Action != null) item.Action(item.State);
                    else item.Callback!(item.State);
                }
                catch (Exception e)
                {
                    Interlocked.Increment(ref _faults);
                    ReportFault(e);
                }
                _turns++;
                Segment?.EndTurn();
            }
            Segment?.OnOwnerIdle();
            if (!_queue.IsEmpty) continue;
            if (_stopping) break;
            Interlocked.Exchange(ref _sleeping, 1);
            if (_queue.IsEmpty && !_stopping) _wake.Wait();
            Interlocked.Exchange(ref _sleeping, 0);
            _wake.Reset();
        }
        t_current = null;
        _stopped.TrySetResult();
    }

    /// <summary>The fault handler is the caller's code: an exception it throws must not end the locality's thread (and the process).</summary>
    private void ReportFault(Exception e)
    {
        try { OnFault?.Invoke(this, e); }
        catch (Exception inner) { System.Diagnostics.Trace.WriteLine($"{this}: OnFault threw {inner.GetType().Name} ({inner.Message}) reporting: {e}"); }
    }

    /// <summary>
    /// Stops the thread after the work already queued; later posts are dropped. Operations started by
    /// <see cref="RunAsync(Func{Task})"/> that have not finished then (awaiting something that would resume them
    /// here) fail with <see cref="ObjectDisposedException"/>, as do later calls.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        lock (_runs) _stopping = true;
        _wake.Set();
        await _stopped.Task.ConfigureAwait(false);
        IRun[] left;
        lock (_runs)
        {
            left = [.. _runs];
            _runs.Clear();
        }
        foreach (var run in left) run.Abandon(Stopped());
    }

    /// <inheritdoc />
    public override string ToString() => $"locality {Index}";
}

/// <summary>Posts continuations back onto their locality.</summary>
internal sealed class LocalitySynchronizationContext(Locality locality) : SynchronizationContext
{
    public override void Post(SendOrPostCallback d, object? state) => locality.PostCallback(d, state);

    public override void Send(SendOrPostCallback d, object? state)
    {
        if (locality.IsOwnerThread) { d(state); return; }
        using var done = new ManualResetEventSlim();
        locality.PostCallback(s => { try { d(s); } finally { done.Set(); } }, state);
        // A stopped locality drops what is posted to it: fail rather than wait forever.
        while (!done.Wait(100))
            if (locality.HasStopped && !done.IsSet) throw new ObjectDisposedException(locality.ToString(), $"{locality} is stopped: the callback sent to it will not run");
    }

    public override SynchronizationContext CreateCopy() => this;
}
