namespace Motr.Be.Tx;

/// <summary>
/// The single thread that owns a segment (a locality, in Motr.Runtime). Every read and write of the
/// segment's memory, every transaction on it, and every continuation of its transactions'
/// <c>Persisted</c> runs on this owner, which is why segment memory needs no locks.
/// </summary>
/// <remarks>
/// Contract with the engine: the owner runs posted callbacks one at a time in posting order; after each
/// one (a turn) it calls <see cref="Segments.Segment.EndTurn"/>; when its queue runs empty it calls
/// <see cref="Segments.Segment.OnOwnerIdle"/> before sleeping.
/// </remarks>
public interface ISegmentOwner
{
    /// <summary>Queues <paramref name="callback"/> to run on the owner thread. Callable from any thread.</summary>
    void Post(Action<object?> callback, object? state);

    /// <summary>Whether the calling thread is the owner thread.</summary>
    bool IsOwnerThread { get; }
}
