using System.Runtime.CompilerServices;
using Motr.Be.Log;
using Motr.Be.Segments;

namespace Motr.Be.Tx;

/// <summary>Counters of one segment's transactions and groups (read from any thread; approximate while running).</summary>
/// <param name="Closed">Transactions closed.</param>
/// <param name="Aborted">Transactions aborted (including those aborted at a turn end).</param>
/// <param name="AbortedAtTurnEnd">Transactions left open across a turn and aborted by the engine (each a bug in the caller).</param>
/// <param name="GroupsSealed">Groups sealed and handed to the log writer.</param>
/// <param name="RegionsCaptured">Regions captured by closed transactions.</param>
/// <param name="RegionsLogged">Regions written to the log after merging.</param>
/// <param name="BytesLogged">Bytes of group chunks written to the log.</param>
/// <param name="SpaceWaits">Times a transaction had to wait for log space.</param>
public readonly record struct SegmentTxStats(long Closed, long Aborted, long AbortedAtTurnEnd, long GroupsSealed,
    long RegionsCaptured, long RegionsLogged, long BytesLogged, long SpaceWaits);

/// <summary>
/// The owner-side transaction machinery of one segment: the transaction pool, the open group,
/// sealing, log-space reservation and persistence waiters. Everything here runs on the owner thread
/// except the few members the log writer calls, which are marked.
/// </summary>
internal sealed partial class TxManager
{
    internal readonly Segment Segment;
    private readonly Domain _domain;
    private ISegmentOwner? _owner;
    private readonly Stack<Transaction> _pool = new();
    private Transaction?[] _dirtyOpen = new Transaction?[4];
    private int _dirtyCount;
    private long _turn;
    private long _lastTxId;

    // Counters.
    private long _closed, _aborted, _abortedAtTurnEnd, _groupsSealed, _regionsCaptured, _regionsLogged, _bytesLogged, _spaceWaits;

    public TxManager(Segment segment, Domain domain)
    {
        Segment = segment;
        _domain = domain;
    }

    public long LastTxId => _lastTxId;

    public SegmentTxStats Stats => new(_closed, _aborted, _abortedAtTurnEnd, _groupsSealed, _regionsCaptured, _regionsLogged, _bytesLogged, _spaceWaits);

    /// <summary>Called once recovery has loaded the segment: ids and group numbers continue from the header.</summary>
    internal void InitFromHeader()
    {
        _lastTxId = Segment.Header.LastTxId;
        _groupSeq = Segment.Header.LastGroupSeq + 1;
        _durableSeq = Segment.Header.LastGroupSeq;
        _writerDurableSeq = _durableSeq;
        if (_domain.Options.VerifyCaptures) _shadow = Segment.Bytes(0, (int)Segment.Size).ToArray();
    }

    public void Attach(ISegmentOwner owner)
    {
        if (_owner != null && !ReferenceEquals(_owner, owner))
            throw new InvalidOperationException($"segment {Segment.Id} already has an owner");
        _owner = owner;
    }

    internal ISegmentOwner? Owner => _owner;

    // ---- open ------------------------------------------------------------------------------------

    public bool TryBegin(TxCredit credit, out Transaction tx)
    {
        long reservation = CheckBegin(credit);
        if (!TryReserve(reservation))
        {
            tx = null!;
            return false;
        }
        tx = Open(credit, reservation);
        return true;
    }

    public ValueTask<Transaction> BeginAsync(TxCredit credit, CancellationToken ct)
    {
        long reservation = CheckBegin(credit);
        // A caller that already gave up gets no transaction, even when space is at hand.
        if (ct.IsCancellationRequested) return ValueTask.FromCanceled<Transaction>(ct);
        if (TryReserve(reservation)) return new ValueTask<Transaction>(Open(credit, reservation));
        return BeginSlowAsync(credit, reservation, ct);
    }

    private async ValueTask<Transaction> BeginSlowAsync(TxCredit credit, long reservation, CancellationToken ct)
    {
        _spaceWaits++;
        ReleaseLocalSpace();
        // Log space is granted to waiters in order; the grant is ours once this returns. The
        // transaction opens only after the await, in the turn that goes on to use it.
        await _domain.LogSpace.WaitAsync(reservation, _owner!, ct);
        if (_domain.Failure is { } failure) { _domain.LogSpace.Release(reservation); throw failure; }
        return Open(credit, reservation);
    }

    private long CheckBegin(TxCredit credit)
    {
        // First, before anything else is looked at or taken (log space, an id, the group): a reader may run several
        // domains, and the message names the one that refused.
        if (_domain.ReadOnly)
            throw new InvalidOperationException($"{_domain.Location}: segment {Segment.Id}: the domain is open read-only (DomainOptions.ReadOnly): " +
                "no transaction can be opened, so nothing can be changed; open it without ReadOnly to write");
        if (_owner is null) throw new InvalidOperationException($"segment {Segment.Id} has no owner: attach it to a locality before opening transactions");
        if (!_owner.IsOwnerThread) ThrowNotOwner("open a transaction on");
        if (_domain.Failure is { } failure) throw failure;
        if (credit.Regions < 0 || credit.Bytes < 0) throw new ArgumentOutOfRangeException(nameof(credit), $"credit {credit} is negative");
        long reservation = LogFormat.Reservation(credit);
        if (reservation > _domain.MaxTxReservation)
            throw new TxUsageException($"segment {Segment.Id}: credit {credit} needs {reservation} bytes of log, more than one record may hold ({_domain.MaxTxReservation}); use a larger log or split the transaction");
        return reservation;
    }

    private Transaction Open(TxCredit credit, long reservation)
    {
        var tx = _pool.Count > 0 ? _pool.Pop() : new Transaction(this);
        tx.Reset(credit, reservation);
        // A group holds at most one record's worth of reservations; start a new group first if needed.
        if (_groupTxCount > 0 && _groupReserved + reservation > _domain.MaxGroupReservation && _dirtyCount == 0) Seal();
        return tx;
    }

    internal void Return(Transaction tx) => _pool.Push(tx);

    /// <summary>
    /// A transaction's state, its group and the segment's memory belong to the owner thread: a transaction changed,
    /// closed, aborted or returned from another thread (a continuation that left the locality, another locality)
    /// would race the owner's turns and corrupt its group or pool. Checked where it is cheap: at the first change of
    /// a transaction and at its end, not at every capture.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void CheckOwner(string what)
    {
        if (_owner is { IsOwnerThread: false }) ThrowNotOwner(what + " a transaction on");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNotOwner(string what)
    {
        if (!Segment.IsOpen)
            throw new ObjectDisposedException(Segment.FileName, $"cannot {what} segment {Segment.Id} ({Segment.FileName}): the segment is closed (its engine was disposed)");
        throw new InvalidOperationException($"cannot {what} segment {Segment.Id} off its owner thread ({_owner}): transactions are opened, changed and ended only on the segment's owner thread");
    }

    /// <summary>First capture (or payload) of a transaction: it now holds changes that a turn end must not leave open.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void MarkDirty(Transaction tx)
    {
        CheckOwner("change");
        tx._captureTurn = _turn;
        if (_dirtyCount == _dirtyOpen.Length) Array.Resize(ref _dirtyOpen, _dirtyOpen.Length * 2);
        tx._openSlot = _dirtyCount;
        _dirtyOpen[_dirtyCount++] = tx;
    }

    /// <summary>A transaction rolled back to no change: as if it had never captured.</summary>
    internal void MarkClean(Transaction tx)
    {
        Undirty(tx);
        tx._captureTurn = -1;
    }

    private void Undirty(Transaction tx)
    {
        if (tx._openSlot < 0) return;
        int last = --_dirtyCount;
        var moved = _dirtyOpen[last]!;
        _dirtyOpen[tx._openSlot] = moved;
        moved._openSlot = tx._openSlot;
        _dirtyOpen[last] = null;
        tx._openSlot = -1;
    }

    // ---- close and abort ---------------------------------------------------------------------------

    internal TxPersistence CloseTx(Transaction tx)
    {
        Undirty(tx);
        tx._id = ++_lastTxId;
        tx._state = TxState.Closed;
        AppendToGroup(tx);
        tx._groupSeq = _groupSeq;
        _closed++;
        _regionsCaptured += tx._regionCount;
        var persisted = new TxPersistence(this, _groupSeq);
        if (tx._force) _groupUrgent = true;
        if (_dirtyCount == 0 && (_groupReserved >= _domain.GroupBoundBytes || _groupTxCount >= _domain.GroupBoundTxs || _markCount >= MaxGroupMarks)) Seal();
        return persisted;
    }

    /// <summary>Deferred checksums after which a group is sealed as soon as no transaction is mid-way.</summary>
    private const int MaxGroupMarks = 1 << 19;

    internal void EndTx(Transaction tx, bool aborted)
    {
        Undirty(tx);
        ReturnLocalSpace(tx._reservation);
        tx._reservation = 0;
        if (aborted) _aborted++;
    }

    /// <summary>Owner calls this after every turn: a transaction that captured and is still open was awaited across — abort it.</summary>
    public void EndTurn()
    {
        _turn++;
        if (_dirtyCount != 0) AbortLeftOpen();
        if (_groupUrgent && _groupTxCount > 0) Seal();
        // A busy locality never goes idle: space its transactions gave back (aborted, or unused by a close) must not
        // stay parked here while a begin, perhaps on another locality, waits for it.
        ReleaseLocalSpaceIfWaited();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AbortLeftOpen()
    {
        while (_dirtyCount > 0)
        {
            var tx = _dirtyOpen[_dirtyCount - 1]!;
            tx.Rollback();
            tx._abortedAtTurnEnd = true;
            EndTx(tx, aborted: true);
            _abortedAtTurnEnd++;
            _domain.ReportInvariantViolation(Segment, tx);
        }
    }

    /// <summary>Owner's queue ran empty: seal now if the log writer is waiting for work.</summary>
    public void OnOwnerIdle()
    {
        if (CanSeal && (_groupUrgent || _domain.Writer.IsIdle)) Seal();
        if (!ReleaseLocalSpaceIfWaited() && _localSpace > _domain.SpaceChunk)
        {
            // Going to sleep with more than a chunk (a large transaction's unused reservation came back): keep one. A
            // transaction that may later wait for space on another locality must not wait on an idle one's hoard.
            _domain.LogSpace.Release(_localSpace - _domain.SpaceChunk);
            _localSpace = _domain.SpaceChunk;
        }
    }

    internal void ForceGroup(long seq)
    {
        if (seq == _groupSeq) _groupUrgent = true;
    }

    /// <summary>Seals whatever is open (at the next turn end if a transaction is mid-way) and returns the persistence of everything closed so far.</summary>
    public TxPersistence Flush()
    {
        if (_owner is { IsOwnerThread: false }) ThrowNotOwner("flush"); // a seal reads live memory and the open group
        long seq = _groupTxCount > 0 ? _groupSeq : _groupSeq - 1;
        if (_groupTxCount > 0)
        {
            if (_dirtyCount == 0) Seal();
            else _groupUrgent = true;
        }
        return new TxPersistence(this, seq);
    }

    // ---- log space ----------------------------------------------------------------------------------

    // Log space is taken from the shared log in chunks and handed to transactions locally, so the
    // two localities do not contend on every open.
    private long _localSpace;

    private bool TryReserve(long n)
    {
        if (_localSpace >= n)
        {
            _localSpace -= n;
            return true;
        }
        long need = n - _localSpace;
        long chunk = Math.Max(need, _domain.SpaceChunk);
        if (_domain.LogSpace.TryReserve(chunk)) _localSpace += chunk;
        else if (chunk != need && _domain.LogSpace.TryReserve(need)) _localSpace += need;
        else return false;
        _localSpace -= n;
        return true;
    }

    private void ReturnLocalSpace(long n) => _localSpace += n;

    private void ReleaseLocalSpace()
    {
        if (_localSpace == 0) return;
        _domain.LogSpace.Release(_localSpace);
        _localSpace = 0;
    }

    private int _spaceReleaseRequested;

    /// <summary>
    /// Any thread: a begin has started waiting for log space. A locality gives back what it keeps at the end of its turns
    /// while a begin waits, but one asleep has no turn: its chunk, kept for its next begin, would stay parked however long
    /// the wait. With many segments on a small log those chunks add up to most of the area, and a begin waited forever
    /// with the log empty. So each owner is asked to run a turn that gives its space back.
    /// </summary>
    internal void RequestSpaceRelease()
    {
        if (_owner is null || Volatile.Read(ref _spaceReleaseRequested) != 0) return;
        if (Interlocked.Exchange(ref _spaceReleaseRequested, 1) == 0) _owner.Post(s_releaseSpace, this);
    }

    private static readonly Action<object?> s_releaseSpace = static state =>
    {
        var m = (TxManager)state!;
        Volatile.Write(ref m._spaceReleaseRequested, 0);
        m.ReleaseLocalSpaceIfWaited();
    };

    /// <summary>Gives back all the space kept here if a begin waits for space (here or on another locality); whether it did.</summary>
    private bool ReleaseLocalSpaceIfWaited()
    {
        if (_localSpace == 0 || !_domain.LogSpace.HasWaiters) return false;
        ReleaseLocalSpace();
        return true;
    }
}
