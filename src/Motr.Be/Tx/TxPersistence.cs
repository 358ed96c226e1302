using System.Runtime.CompilerServices;

namespace Motr.Be.Tx;

/// <summary>
/// Awaitable that completes when a closed transaction's group is durable in the log. Every
/// transaction of a group shares the same completion, so awaiting it allocates nothing. Awaited on the
/// segment's owner thread, the continuation runs there. Awaited anywhere else (another locality, the
/// thread pool) it resumes on the awaiter's own <see cref="SynchronizationContext"/> (its locality) or,
/// without one, on the thread pool — never on this segment's owner — and it resumes even if the owner has
/// stopped (this costs a task, as <see cref="AsTask"/>). If the log fails, awaiting throws
/// <see cref="LogFailedException"/>; if the domain closed before the group was durable,
/// <see cref="ObjectDisposedException"/>.
/// </summary>
public readonly struct TxPersistence
{
    private readonly TxManager? _m;
    private readonly long _seq;

    internal TxPersistence(TxManager m, long groupSeq)
    {
        _m = m;
        _seq = groupSeq;
    }

    /// <summary>Sequence number of the group holding the transaction(s).</summary>
    public long GroupSeq => _seq;

    /// <summary>Whether the group is durable (or the log failed).</summary>
    public bool IsCompleted => _m is null || _m.IsDurable(_seq);

    /// <summary>Gets the awaiter.</summary>
    public Awaiter GetAwaiter() => new(_m, _seq);

    /// <summary>A <see cref="Task"/> for the same completion (allocates; for callers off the owner thread).</summary>
    public Task AsTask() => _m is null ? Task.CompletedTask : _m.PersistedTask(_seq);

    /// <summary>The awaiter of <see cref="TxPersistence"/>.</summary>
    public readonly struct Awaiter : ICriticalNotifyCompletion
    {
        private readonly TxManager? _m;
        private readonly long _seq;

        internal Awaiter(TxManager? m, long seq)
        {
            _m = m;
            _seq = seq;
        }

        /// <summary>Whether the group is durable.</summary>
        public bool IsCompleted => _m is null || _m.IsDurable(_seq);

        /// <summary>Returns when durable; throws <see cref="LogFailedException"/> if the log failed first, <see cref="ObjectDisposedException"/> if the domain closed first.</summary>
        public void GetResult() => _m?.ThrowIfFailed(_seq);

        /// <inheritdoc />
        public void OnCompleted(Action continuation) => _m!.AddWaiter(_seq, continuation, flowContext: true);

        /// <inheritdoc />
        public void UnsafeOnCompleted(Action continuation) => _m!.AddWaiter(_seq, continuation, flowContext: false);
    }
}
