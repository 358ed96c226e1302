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
    /// to the current one, so the current element may be deleted during the walk; any other change to the
    /// list invalidates the enumerator. Each step validates the element's link (a damaged chain throws
    /// <see cref="BeCorruptionException"/>), and the walk stops with that error after more elements than the
    /// count the list had when the walk began (a cycle).
    /// </summary>
    public struct Enumerator
    {
        private readonly PersistentList _list;
        private readonly bool _backward;
        private long _next;
        private long _current;
        private long _left;
        private long _from;

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
        }

        /// <summary>Offset of the current element.</summary>
        public readonly long Current => _current;

        /// <summary>Moves to the following element; false at the end of the list.</summary>
        /// <exception cref="BeCorruptionException">The chain leads to something that is not an element of this list, or is longer than the list's count.</exception>
        public bool MoveNext()
        {
            long e = _next;
            if (e == 0)
            {
                _current = 0;
                return false;
            }
            if (_left-- <= 0) _list.ThrowTooLong(e, _from);
            long link = _list.Neighbour(e, "enumerate", _from);
            ref ListLink k = ref _list._seg.At<ListLink>(link);
            _from = _current = e;
            _next = _backward ? k.Prev : k.Next;
            return true;
        }
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn, System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private void ThrowTooLong(long elem, long from) =>
        throw new BeCorruptionException(_seg.FileName, elem + _linkOffset,
            $"{Where}: enumerate: element 0x{elem:X} (after 0x{from:X}) is past the list's count: the chain has a cycle or the count is wrong");
}
