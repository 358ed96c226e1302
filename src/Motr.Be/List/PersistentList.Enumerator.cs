namespace Motr.Be.List;

public readonly partial struct PersistentList
{
    /// <summary>Enumerates the element offsets from head to tail (allocation-free with <c>foreach</c>).</summary>
    public Enumerator GetEnumerator() => new(this, backward: false);

    /// <summary>The element offsets from tail to head: <c>foreach (long e in list.Backward)</c>.</summary>
    public BackwardEnumerable Backward => new(this);

    /// <summary>The elements of a list from tail to head.</summary>
    public readonly struct BackwardEnumerable
    {
        private readonly PersistentList _list;

        internal BackwardEnumerable(PersistentList list) => _list = list;

        /// <summary>Enumerates the element offsets from tail to head.</summary>
        public Enumerator GetEnumerator() => new(_list, backward: true);
    }

    /// <summary>
    /// Walks a list's element offsets in one direction. It reads the following element before it moves
    /// to the current one, so the current element may be deleted (and freed) during the walk; any other change to the
    /// list invalidates the enumerator, whose next move then throws <see cref="InvalidOperationException"/>. Each step validates the element's link and that it links back to the
    /// element before it, and the end of the chain is checked against the head (a damaged chain throws
    /// <see cref="BeCorruptionException"/> instead of skipping elements); the walk also stops with that error
    /// after more elements than the count the list had when the walk began (a cycle).
    /// </summary>
    public struct Enumerator
    {
        private readonly PersistentList _list;
        private readonly bool _backward;
        private long _next;
        private long _current;
        private long _left;
        private long _from;
        private long _fromBack;

        internal Enumerator(PersistentList list, bool backward)
        {
            ref ListHead h = ref list.HeadRef("enumerate");
            _list = list;
            _backward = backward;
            _next = backward ? h.Last : h.First;
            // A walk longer than the segment has room for links is a cycle whatever the head says: a damaged
            // count must not let one run for 2^63 steps.
            _left = Math.Min(Math.Max(h.Count, 0), Math.Max(0, (list._seg.Size - ListFormat.MinOffset) / ListLink.SizeOf));
            _current = 0;
            _from = 0;
            _fromBack = 0;
        }

        /// <summary>
        /// Whether <paramref name="back"/>, the back link of the element reached from the previous one (or the
        /// head's end when the chain ends), names that previous element. When the walk deleted the previous
        /// element, the list links past it: then it names that element's own predecessor, kept when the walk
        /// moved to it (not read again: the deleted element may have been freed and its memory reused).
        /// </summary>
        private readonly bool LinksBack(long back) => back == _from || (_from != 0 && back == _fromBack);

        /// <summary>
        /// Whether the list still leads from where the walk is to the element it read next: the current element's
        /// link (or, when the walk deleted it, the link of the element it kept before it, or the head when there is
        /// none) still names that element. Nothing but a change writes those bytes between two moves, so a difference
        /// is a change other than deleting the current element (an insertion or deletion near the walk, an abort
        /// taking back the elements walked): misuse, which must not be reported as damage.
        /// </summary>
        private readonly bool Unchanged()
        {
            if (_list._seg is null) return true; // a default enumerator: the move goes on to say it is unbound
            long at = _from;
            if (at != 0)
            {
                ref ListLink k = ref _list._seg.At<ListLink>(at + _list._linkOffset);
                if (k.Magic == ListFormat.LinkedMagic && k.Owner == _list._head) return (_backward ? k.Prev : k.Next) == _next;
                at = _fromBack; // deleted by the walk: the list now links its predecessor to the element after it
            }
            if (at == 0)
            {
                ref ListHead h = ref _list._seg.At<ListHead>(_list._head);
                return (_backward ? h.Last : h.First) == _next;
            }
            if (!_list.TryLinkOffset(at, out long link)) return false;
            ref ListLink b = ref _list._seg.At<ListLink>(link);
            return b.Magic == ListFormat.LinkedMagic && b.Owner == _list._head && (_backward ? b.Prev : b.Next) == _next;
        }

        /// <summary>Offset of the current element.</summary>
        public readonly long Current => _current;

        /// <summary>Moves to the following element; false at the end of the list.</summary>
        /// <exception cref="BeCorruptionException">The chain leads to something that is not an element of this list, or is longer than the list's count.</exception>
        /// <exception cref="InvalidOperationException">The list changed since the last move other than by deleting the current element
        /// (or the transaction that made the elements walked was aborted); or called off the segment's owner thread
        /// (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
        public bool MoveNext()
        {
            _list.CheckOwnerIfBound("enumerate"); // a default enumerator goes on to say it is unbound
            if (!Unchanged()) _list.ThrowChanged(_from, _backward);
            long e = _next;
            if (e == 0)
            {
                // The chain ended: at the head's end of the list, or a damaged link cut it short.
                ref ListHead h = ref _list.HeadRef("enumerate");
                if (!LinksBack(_backward ? h.First : h.Last)) _list.ThrowCutShort(_from, _backward);
                _current = 0;
                return false;
            }
            if (_left-- <= 0) _list.ThrowTooLong(e, _from);
            long link = _list.Neighbour(e, "enumerate", _from);
            ref ListLink k = ref _list._seg.At<ListLink>(link);
            // Safe walk: the element must link back to the one before it, or a damaged link would skip
            // elements (or jump to another part of the chain) without a sign.
            if (e == _from || !LinksBack(_backward ? k.Next : k.Prev)) _list.ThrowNotLinkedBack(e, _from, _backward);
            _fromBack = _backward ? k.Next : k.Prev;
            _from = _current = e;
            _next = _backward ? k.Prev : k.Next;
            return true;
        }
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn, System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private void ThrowNotLinkedBack(long elem, long from, bool backward)
    {
        ref ListLink k = ref _seg.At<ListLink>(elem + _linkOffset);
        throw new BeCorruptionException(_seg.FileName, elem + _linkOffset,
            $"{Where}: enumerate: element 0x{elem:X}, reached from {(from == 0 ? "the head" : $"0x{from:X}")}, links back to " +
            $"0x{(backward ? k.Next : k.Prev):X}: a damaged link skips part of the list");
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn, System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private void ThrowChanged(long from, bool backward) =>
        throw new InvalidOperationException(
            $"{Where}: enumerate: the list changed since the {(backward ? "backward " : "")}walk {(from == 0 ? "began" : $"reached element 0x{from:X}")}: " +
            "only the current element may be deleted during a walk (another insertion or deletion, or an abort of the transaction " +
            "that made the elements walked, invalidates the enumerator)");

    [System.Diagnostics.CodeAnalysis.DoesNotReturn, System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private void ThrowCutShort(long from, bool backward)
    {
        ref ListHead h = ref _seg.At<ListHead>(_head);
        throw new BeCorruptionException(_seg.FileName, from == 0 ? _head : from + _linkOffset,
            $"{Where}: enumerate: the chain ends after {(from == 0 ? "the head" : $"element 0x{from:X}")}, but the head's " +
            $"{(backward ? "first" : "last")} element is 0x{(backward ? h.First : h.Last):X}: a damaged link cuts the list short");
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn, System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private void ThrowTooLong(long elem, long from) =>
        throw new BeCorruptionException(_seg.FileName, elem + _linkOffset,
            $"{Where}: enumerate: element 0x{elem:X} (after 0x{from:X}) is past the list's count: the chain has a cycle or the count is wrong");
}
