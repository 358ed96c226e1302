namespace Motr.Be.List;

public readonly partial struct PersistentList
{
    /// <summary>
    /// Verifies the whole list and returns what is wrong (empty when it is sound): the head's magic,
    /// version, flags, reserved field and the agreement of first, last and count; then a forward walk
    /// from first and a backward walk from last, each checking every element's link (inside the data
    /// area, aligned, linked magic, owned by this head), that each back pointer names the element just
    /// left, that the walk ends at the other end the head names, and that it visits exactly count
    /// elements. A cycle shows up as a broken back pointer or a walk longer than the count; the walks
    /// are bounded, so <see cref="Check"/> always terminates. Allocates (a debugging and fsck aid).
    /// </summary>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public IReadOnlyList<string> Check()
    {
        var errors = new List<string>();
        if (_seg is null)
        {
            errors.Add("the list is default (bound to no segment)");
            return errors;
        }
        CheckOwner(_seg, _head, "check");
        ref ListHead h = ref _seg.At<ListHead>(_head);
        if (h.Magic != ListFormat.HeadMagic)
        {
            errors.Add($"{Where}: head magic is 0x{h.Magic:X16}, expected 0x{ListFormat.HeadMagic:X16}");
            return errors;
        }
        if (h.Version != ListFormat.Version)
        {
            errors.Add($"{Where}: head version is {h.Version}, this build reads {ListFormat.Version}");
            return errors;
        }
        if (h.Flags != 0) errors.Add($"{Where}: head flags are 0x{h.Flags:X}, expected 0 (none defined)");
        if (h.Reserved != 0) errors.Add($"{Where}: head reserved field is 0x{h.Reserved:X}, expected 0");
        long count = h.Count;
        if (count < 0) errors.Add($"{Where}: head count is negative ({count})");
        if ((h.First == 0) != (h.Last == 0))
            errors.Add($"{Where}: head first 0x{h.First:X} and last 0x{h.Last:X} disagree on emptiness");
        if ((count == 0) != (h.First == 0))
            errors.Add($"{Where}: head count {count} disagrees with first 0x{h.First:X}");

        // No list in the data area can have more elements than links fit in it.
        long capacity = Math.Max(0, (_seg.Size - ListFormat.MinOffset) / ListLink.SizeOf);
        long limit = Math.Min(Math.Max(count, 0), capacity);
        Walk(errors, ref h, backward: false, count, limit);
        Walk(errors, ref h, backward: true, count, limit);
        return errors;
    }

    private void Walk(List<string> errors, ref ListHead h, bool backward, long count, long limit)
    {
        string dir = backward ? "backward walk" : "forward walk";
        string back = backward ? "next" : "prev";
        long from = 0, cur = backward ? h.Last : h.First, n = 0;
        while (cur != 0)
        {
            if (n >= limit)
            {
                errors.Add($"{Where}: {dir}: element #{n} 0x{cur:X} (after 0x{from:X}) is past the head's count {count}: a cycle or a wrong count");
                return;
            }
            if (!TryLinkOffset(cur, out long link))
            {
                errors.Add($"{Where}: {dir}: element #{n} 0x{cur:X} (after 0x{from:X}): its link 0x{cur + _linkOffset:X} is outside the data area [0x{ListFormat.MinOffset:X}, 0x{_seg.Size:X}) or misaligned");
                return;
            }
            ref ListLink k = ref _seg.At<ListLink>(link);
            if (k.Magic != ListFormat.LinkedMagic)
            {
                errors.Add($"{Where}: {dir}: element #{n} 0x{cur:X} (after 0x{from:X}): link magic is 0x{k.Magic:X16}, expected 0x{ListFormat.LinkedMagic:X16}");
                return;
            }
            if (k.Owner != _head)
            {
                errors.Add($"{Where}: {dir}: element #{n} 0x{cur:X} (after 0x{from:X}): its link says it is on list 0x{k.Owner:X}");
                return;
            }
            long backPtr = backward ? k.Next : k.Prev;
            if (backPtr != from)
            {
                errors.Add($"{Where}: {dir}: element #{n} 0x{cur:X}: its {back} is 0x{backPtr:X}, expected 0x{from:X}");
                return;
            }
            from = cur;
            cur = backward ? k.Prev : k.Next;
            n++;
        }
        long end = backward ? h.First : h.Last;
        if (from != end)
            errors.Add($"{Where}: {dir} ended at 0x{from:X} but the head's {(backward ? "first" : "last")} is 0x{end:X}");
        if (n != count)
            errors.Add($"{Where}: {dir} visited {n} elements but the head's count is {count}");
    }
}
