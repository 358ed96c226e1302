using static Motr.Be.Tests.TestSupport.Threads;
using Motr.Be.List;
using Motr.Be.Segments;
using Motr.Be.Tx;
using Motr.Runtime;
using static Motr.Be.Tests.List.ListLayout;

namespace Motr.Be.Tests.List;

/// <summary>
/// The list's public contract at its edges: the owner thread, the transaction it is given (null, of another segment,
/// ended, short of credit), lists used after their engine closed, enumerators used after the list changed.
/// </summary>
public sealed class PersistentListContractTests
{
    private static readonly TxCredit Big = new(64, 4096);

    private static async Task<PersistentList> NewList(Segment seg, int index = 0)
    {
        using var tx = await seg.BeginAsync(PersistentList.CreateCredit);
        PersistentList.Create(tx, seg, HeadAt(index));
        _ = tx.Close();
        return new PersistentList(seg, HeadAt(index), LinkOffset);
    }

    private static async Task Do(Segment seg, Action<Transaction> ops)
    {
        using var tx = await seg.BeginAsync(Big);
        ops(tx);
        _ = tx.Close();
    }

    [Fact]
    public async Task List_operations_off_the_segments_locality_are_refused()
    {
        using var dir = new ListDomain();
        await using var engine = await dir.OpenAsync();
        var loc = engine.Localities[0];
        var seg = loc.Segment!;
        long a = Elem(0), b = Elem(1);
        var list = await loc.RunAsync(async () =>
        {
            var l = await NewList(seg);
            await Do(seg, tx => { l.AddTail(tx, a); l.AddTail(tx, b); });
            return l;
        });

        // From the test's thread, while the locality runs: every read and tool races the owner's changes (and the
        // first read of a head after open updates the segment's map of verified blocks), so all are refused.
        void Refused(Action op, string what)
        {
            var ex = Assert.Throws<InvalidOperationException>(op);
            Assert.Contains($"list 0x{HeadAt(0):X} in segment 1", ex.Message);
            Assert.Contains(what, ex.Message);
            Assert.Contains("owner thread", ex.Message);
        }
        Refused(() => _ = list.Count, "count");
        Refused(() => _ = list.Head, "head");
        Refused(() => _ = list.Tail, "tail");
        Refused(() => _ = list.IsEmpty, "is-empty");
        Refused(() => list.Next(a), "next");
        Refused(() => list.Prev(b), "prev");
        Refused(() => list.Contains(a), "contains");
        Refused(() => list.Check(), "check");
        Refused(() => { foreach (long _ in list) { } }, "enumerate");
        Refused(() => { foreach (long _ in list.Backward) { } }, "enumerate");
        Refused(() => _ = new PersistentList(seg, HeadAt(0), LinkOffset), "bind");

        await loc.RunAsync(async () =>
        {
            // An enumerator started on the locality and moved from another thread.
            var e = list.GetEnumerator();
            Assert.True(e.MoveNext());
            var moved = OffThread(() => e.MoveNext());
            Assert.IsType<InvalidOperationException>(moved);

            // A transaction opened (and already changed) on the locality, then used from another thread: the
            // transaction checks the thread only at its first change, so the list must check it itself.
            using var tx = await seg.BeginAsync(Big);
            tx.Capture<long>(Elem(20));
            var used = tx.Used;
            var ops = new Action[]
            {
                () => list.Add(tx, Elem(2)), () => list.AddTail(tx, Elem(2)), () => list.AddAfter(tx, a, Elem(2)),
                () => list.AddBefore(tx, b, Elem(2)), () => list.Del(tx, a), () => list.Destroy(tx),
                () => PersistentList.Create(tx, seg, HeadAt(1)),
            };
            foreach (var op in ops)
            {
                var off = OffThread(op); // blocking, not awaiting: the transaction must stay open in this turn
                Assert.IsType<InvalidOperationException>(off);
                Assert.Contains("owner thread", off!.Message);
                Assert.Equal(used, tx.Used);
            }
            tx.Abort();
            ListAssert.Same(list, [a, b]);
            Assert.Empty(list.Check());
        });
    }

    [Fact]
    public async Task A_list_used_after_its_engine_closed_throws_ObjectDisposedException()
    {
        using var dir = new ListDomain();
        var engine = await dir.OpenAsync();
        var loc = engine.Localities[0];
        var seg = loc.Segment!;
        long a = Elem(0), b = Elem(1);
        var list = await loc.RunAsync(async () =>
        {
            var l = await NewList(seg);
            await Do(seg, tx => { l.AddTail(tx, a); l.AddTail(tx, b); });
            return l;
        });
        var walk = await loc.RunAsync(() =>
        {
            var e = list.GetEnumerator();
            Assert.True(e.MoveNext());
            return e;
        });
        await engine.DisposeAsync();

        // Kept too long: the segment's memory is gone. Each use says so, never touches the unmapped memory.
        void Gone(Action op)
        {
            var ex = Assert.Throws<ObjectDisposedException>(op);
            Assert.Contains("closed", ex.Message);
        }
        Gone(() => _ = list.Count);
        Gone(() => _ = list.Head);
        Gone(() => list.Next(a));
        Gone(() => list.Contains(a));
        Gone(() => list.Check());
        Gone(() => { foreach (long _ in list) { } });
        Gone(() => walk.MoveNext());
        Gone(() => _ = new PersistentList(seg, HeadAt(0), LinkOffset));
        Assert.Equal(HeadAt(0), list.HeadOffset);   // the value's own fields stay readable
        Assert.Contains($"list 0x{HeadAt(0):X}", list.ToString());
    }

    /// <summary>Every changing operation, each on an element that suits it (a, b are on the list, b after a and not last; x is not on it).</summary>
    private static (string Name, Action<Transaction> Op)[] Changes(Segment seg, PersistentList list, long a, long b, long x) =>
    [
        ("add", tx => list.Add(tx, x)),
        ("add-tail", tx => list.AddTail(tx, x)),
        ("add-after", tx => list.AddAfter(tx, a, x)),
        ("add-before", tx => list.AddBefore(tx, b, x)),
        ("del", tx => list.Del(tx, b)),
        ("create", tx => PersistentList.Create(tx, seg, HeadAt(1))),
    ];

    [Fact]
    public Task A_transaction_short_of_credit_is_refused_before_it_captures_anything() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        long a = Elem(0), b = Elem(1), c = Elem(2), x = Elem(3);
        await Do(seg, tx => { list.AddTail(tx, a); list.AddTail(tx, b); list.AddTail(tx, c); });
        byte[] before = ListAssert.Snapshot(seg);
        foreach (var (name, op) in Changes(seg, list, a, b, x))
        {
            foreach (var less in new[] { new TxCredit(1, 0), new TxCredit(0, 1) })
            {
                // The transaction already holds a change of its own; the operation's credit is one region or byte short.
                var need = name switch
                {
                    "add" => PersistentList.AddCredit, "add-tail" => PersistentList.AddTailCredit,
                    "add-after" or "add-before" => PersistentList.InsertCredit,
                    "del" => PersistentList.DelCredit, _ => PersistentList.CreateCredit,
                };
                // Worst cases: in [a, b, c], add-after a, add-before b and del b touch both neighbours.
                using var tx = await seg.BeginAsync(TxCredit.Region(8) + new TxCredit(need.Regions - less.Regions, need.Bytes - less.Bytes));
                tx.Capture<long>(Elem(20)) = 7;
                var used = tx.Used;
                var ex = Assert.Throws<TxUsageException>(() => op(tx));
                Assert.Contains($"list 0x{(name == "create" ? HeadAt(1) : HeadAt(0)):X} in segment 1", ex.Message);
                Assert.Contains(name, ex.Message);
                Assert.Contains("exceeds its credit", ex.Message);
                // Refused whole: not a capture made, so the transaction goes on as it was (and may still close).
                Assert.Equal(used, tx.Used);
                _ = tx.Close();
                seg.At<long>(Elem(20)) = 0; // (test only) forget the marker so the snapshot compares
            }
        }
        Assert.Equal(before, ListAssert.Snapshot(seg));
        ListAssert.Same(list, [a, b, c]);
    });

    [Fact]
    public Task A_null_or_ended_transaction_is_refused_naming_the_list() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        long a = Elem(0), b = Elem(1), x = Elem(3);
        await Do(seg, tx => { list.AddTail(tx, a); list.AddTail(tx, b); });
        var closed = await seg.BeginAsync(Big);
        _ = closed.Close();
        var aborted = await seg.BeginAsync(Big);
        aborted.Abort();
        foreach (var (name, op) in Changes(seg, list, a, b, x))
        {
            var none = Assert.Throws<ArgumentNullException>(() => op(null!));
            Assert.Equal("tx", none.ParamName);
            foreach (var tx in new[] { closed, aborted })
            {
                var ex = Assert.Throws<TxUsageException>(() => op(tx));
                Assert.Contains($"in segment 1", ex.Message);
                Assert.Contains("list 0x", ex.Message);
                Assert.Contains(name, ex.Message);
                Assert.Contains($"needs an open transaction; it is {tx.State}", ex.Message);
            }
        }
        Assert.Throws<ArgumentNullException>(() => list.Destroy(null!));
        Assert.Contains("needs an open transaction", Assert.Throws<TxUsageException>(() => list.Destroy(aborted)).Message);
        closed.Dispose();
        aborted.Dispose();
        ListAssert.Same(list, [a, b]);
    });

    [Fact]
    public Task Links_damaged_into_a_loop_are_reported_not_spread_by_del_or_insert() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        long a = Elem(0), b = Elem(1), c = Elem(2), x = Elem(3);
        await Do(seg, tx => { list.AddTail(tx, a); list.AddTail(tx, b); list.AddTail(tx, c); });
        byte[] sound = ListAssert.Snapshot(seg);

        // Each damage is made in a transaction, then the operation must refuse (naming the damaged link) and change
        // nothing more; the abort undoes the damage. Each loop passes the neighbour checks an operation makes: every
        // link met names, as its facing pointer, the element the operation came from.
        async Task Refused(Action<Transaction> damage, Action<Transaction> op, long damagedElem)
        {
            using var tx = await seg.BeginAsync(Big);
            damage(tx);
            byte[] damaged = ListAssert.Snapshot(seg);
            var used = tx.Used;
            var ex = Assert.Throws<BeCorruptionException>(() => op(tx));
            Assert.Equal(damagedElem + LinkOffset, ex.Offset);
            Assert.Contains($"list 0x{HeadAt(0):X} in segment 1", ex.Message);
            Assert.Contains($"0x{damagedElem:X}", ex.Message);
            Assert.Equal(damaged, ListAssert.Snapshot(seg));
            Assert.Equal(used, tx.Used);
            tx.Abort();
            Assert.Equal(sound, ListAssert.Snapshot(seg));
        }

        ref ListLink L(Transaction tx, long e) => ref tx.Capture<ListLink>(e + LinkOffset);
        // b links to itself both ways: deleting it would leave a and c pointing at an unlinked element.
        await Refused(tx => { L(tx, b).Prev = b; L(tx, b).Next = b; }, tx => list.Del(tx, b), b);
        // a and b link to each other both ways (a two-element cycle): deleting b would make a a self loop.
        await Refused(tx => { L(tx, a).Prev = b; L(tx, b).Next = a; }, tx => list.Del(tx, b), b);
        // a links to itself both ways: inserting after it would put x between a and a.
        await Refused(tx => { L(tx, a).Prev = a; L(tx, a).Next = a; }, tx => list.AddAfter(tx, a, x), a);
        await Refused(tx => { L(tx, a).Prev = a; L(tx, a).Next = a; }, tx => list.AddBefore(tx, a, x), a);
        ListAssert.Same(list, [a, b, c]);
    });

    [Fact]
    public Task An_enumerator_used_after_the_list_changed_says_so_instead_of_reporting_damage() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        long a = Elem(0), b = Elem(1), c = Elem(2), x = Elem(3);
        await Do(seg, tx => { list.AddTail(tx, a); list.AddTail(tx, b); list.AddTail(tx, c); });

        // Moves a walk <paramref name="steps"/> times, makes a change other than deleting the current element (in a
        // transaction then aborted, so the list is sound again), and expects the next move to say the list changed.
        async Task Invalidated(bool backward, int steps, Action<Transaction> change)
        {
            var e = backward ? list.Backward.GetEnumerator() : list.GetEnumerator();
            for (int i = 0; i < steps; i++) Assert.True(e.MoveNext());
            using var tx = await seg.BeginAsync(Big);
            change(tx);
            var ex = Assert.Throws<InvalidOperationException>(() => e.MoveNext());
            Assert.Contains($"list 0x{HeadAt(0):X} in segment 1", ex.Message);
            Assert.Contains("changed", ex.Message);
            tx.Abort();
            Assert.Empty(list.Check());
        }

        await Invalidated(false, 0, tx => list.Add(tx, x));              // before the first move, at the head's end
        await Invalidated(false, 1, tx => list.AddAfter(tx, a, x));      // right after the current element
        await Invalidated(false, 1, tx => list.Del(tx, b));              // the element the walk goes to next
        await Invalidated(false, 3, tx => list.AddTail(tx, x));          // after the last: the walk would end early
        await Invalidated(true, 1, tx => list.AddBefore(tx, c, x));      // backward, right before the current element
        await Invalidated(true, 1, tx => { list.Del(tx, c); list.Del(tx, b); }); // the current one and the next
        // The walk deleted its current element, then something else changed near it.
        await Invalidated(false, 2, tx => { list.Del(tx, b); list.AddAfter(tx, a, x); });

        // A walk over elements an aborted transaction had added: the abort took them away.
        var other = await NewList(seg, 1);
        long p = Elem(10), q = Elem(11), r = Elem(12);
        using (var tx = await seg.BeginAsync(Big))
        {
            other.AddTail(tx, p); other.AddTail(tx, q); other.AddTail(tx, r);
            var e = other.GetEnumerator();
            Assert.True(e.MoveNext());
            Assert.True(e.MoveNext());
            tx.Abort();
            Assert.Contains("changed", Assert.Throws<InvalidOperationException>(() => e.MoveNext()).Message);
        }

        // Deleting the current element stays allowed, in either direction.
        using (var tx = await seg.BeginAsync(Big))
        {
            var seen = new List<long>();
            foreach (long e in list) { seen.Add(e); list.Del(tx, e); }
            Assert.Equal([a, b, c], seen);
            tx.Abort();
        }
        using (var tx = await seg.BeginAsync(Big))
        {
            var seen = new List<long>();
            foreach (long e in list.Backward) { seen.Add(e); if (e == b) list.Del(tx, e); }
            Assert.Equal([c, b, a], seen);
            tx.Abort();
        }
        ListAssert.Same(list, [a, b, c]);
    });

    [Fact]
    public Task Next_and_Prev_report_a_damaged_neighbour_instead_of_returning_it() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        var other = await NewList(seg, 1);
        long a = Elem(0), b = Elem(1), c = Elem(2), stranger = Elem(9), elsewhere = Elem(10);
        await Do(seg, tx => { list.AddTail(tx, a); list.AddTail(tx, b); list.AddTail(tx, c); other.Add(tx, elsewhere); });

        // A caller stepping with Next/Prev must not be led silently past elements, off the list, or into another list.
        async Task Damaged(Action<Transaction> damage, Func<long> step, long at)
        {
            using var tx = await seg.BeginAsync(Big);
            damage(tx);
            var ex = Assert.Throws<BeCorruptionException>(() => step());
            Assert.Equal(at + LinkOffset, ex.Offset);
            Assert.Contains($"list 0x{HeadAt(0):X} in segment 1", ex.Message);
            tx.Abort();
        }

        ref ListLink L(Transaction tx, long e) => ref tx.Capture<ListLink>(e + LinkOffset);
        await Damaged(tx => L(tx, a).Next = c, () => list.Next(a), c);               // skips b: c's prev is b
        await Damaged(tx => L(tx, c).Prev = a, () => list.Prev(c), a);               // skips b backward: a's next is b
        await Damaged(tx => L(tx, a).Next = stranger, () => list.Next(a), stranger); // an element on no list
        await Damaged(tx => L(tx, b).Prev = elsewhere, () => list.Prev(b), elsewhere); // an element of another list
        await Damaged(tx => L(tx, a).Next = seg.Size + 64, () => list.Next(a), seg.Size + 64); // outside the segment
        await Damaged(tx => L(tx, b).Next = 0, () => list.Next(b), b);               // cut short: the head's last is c
        await Damaged(tx => L(tx, b).Prev = 0, () => list.Prev(b), b);               // cut short: the head's first is a
        ListAssert.Same(list, [a, b, c]);
    });

    [Fact]
    public Task A_list_used_after_it_was_destroyed_throws_ObjectDisposedException_not_corruption() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        var same = new PersistentList(seg, HeadAt(0), LinkOffset);   // another value bound to the same list
        long a = Elem(0);

        // Destroyed, then the transaction aborted: the list is back and both values work.
        using (var tx = await seg.BeginAsync(Big))
        {
            same.Destroy(tx);
            Assert.Contains("destroyed", Assert.Throws<ObjectDisposedException>(() => _ = list.Count).Message);
            tx.Abort();
        }
        Assert.Equal(0, list.Count);

        await Do(seg, tx => list.Destroy(tx));
        // Using a list after destroying it is the caller's mistake, not damage to report (monitoring treats
        // BeCorruptionException as a damaged segment).
        void Gone(Action op)
        {
            var ex = Assert.Throws<ObjectDisposedException>(op);
            Assert.Contains($"list 0x{HeadAt(0):X} in segment 1", ex.Message);
            Assert.Contains("destroyed", ex.Message);
        }
        Gone(() => _ = list.Count);
        Gone(() => _ = same.IsEmpty);
        Gone(() => { foreach (long _ in list) { } });
        using (var tx = await seg.BeginAsync(Big))
        {
            Gone(() => list.Add(tx, a));
            Gone(() => same.Destroy(tx));
            Assert.Equal(default, tx.Used);
            tx.Abort();
        }
        // Binding a new value to the place is still a question of what the bytes hold: no list there.
        Assert.Contains("no list head here", Assert.Throws<BeCorruptionException>(() => new PersistentList(seg, HeadAt(0), LinkOffset)).Message);
        // A list created again at the place: the old values bind it (a list value names a place, not a birth).
        await Do(seg, tx => PersistentList.Create(tx, seg, HeadAt(0)));
        Assert.Equal(0, list.Count);
    });

    [Fact]
    public Task A_destroyed_heads_pending_checksum_is_not_written_over_what_reuses_its_place() => OnLocality(async seg =>
    {
        // The head's checksum is deferred to the group's seal, which writes it only if the place still starts with
        // the head magic's first 32 bits ("MOTR"). Every list magic starts so: here the place of a destroyed head is
        // reused, in the same group, by another list's element whose link magic lands where the head's was.
        long h = HeadAt(1);
        var keeper = await NewList(seg, 4);
        long x = h - ListLink.MagicOffset - LinkOffset;      // its link's magic is at h
        long userData = x + ElemSize, crcAt = h + ListHead.CrcOffset;
        Assert.InRange(crcAt, userData, userData + 24 - 4);  // the head's checksum field falls in these user bytes
        using (var tx = await seg.BeginAsync(Big))
        {
            PersistentList.Create(tx, seg, h);
            var gone = new PersistentList(seg, h, LinkOffset);
            gone.AddTail(tx, Elem(0));
            gone.Del(tx, Elem(0));
            gone.Destroy(tx);
            // The place is reused: user bytes, and an element linked into another list.
            tx.Capture(userData, 24).Fill(0xAB);
            keeper.AddTail(tx, x);
            Assert.Equal(unchecked((uint)ListFormat.HeadMagic), seg.At<uint>(h));
            _ = tx.Close();
        }
        await seg.FlushAsync();   // seals the group
        Assert.All(seg.Bytes(userData, 24).ToArray(), v => Assert.Equal(0xAB, v));
        ListAssert.Same(keeper, [x]);
    });

    [Fact]
    public Task Head_and_Tail_report_a_damaged_end_instead_of_returning_it() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        var other = await NewList(seg, 1);
        long a = Elem(0), b = Elem(1), c = Elem(2), stranger = Elem(9), elsewhere = Elem(10);
        await Do(seg, tx => { list.AddTail(tx, a); list.AddTail(tx, b); list.AddTail(tx, c); other.Add(tx, elsewhere); });

        // A caller starting a walk at Head or Tail must not start it at an element that is not an end of this list
        // (the next step would then blame the caller's misuse, or skip elements without a sign).
        async Task Damaged(Action<Transaction> damage, Func<long> end, long at)
        {
            using var tx = await seg.BeginAsync(Big);
            damage(tx);
            var ex = Assert.Throws<BeCorruptionException>(() => end());
            Assert.Equal(at, ex.Offset);
            Assert.Contains($"list 0x{HeadAt(0):X} in segment 1", ex.Message);
            tx.Abort();
        }

        ref ListHead H(Transaction tx) => ref tx.Capture<ListHead>(HeadAt(0));
        await Damaged(tx => H(tx).First = b, () => list.Head, b + LinkOffset);                  // skips a: b's prev is a
        await Damaged(tx => H(tx).Last = b, () => list.Tail, b + LinkOffset);                   // cuts c: b's next is c
        await Damaged(tx => H(tx).First = stranger, () => list.Head, stranger + LinkOffset);    // on no list
        await Damaged(tx => H(tx).Last = elsewhere, () => list.Tail, elsewhere + LinkOffset);   // on another list
        await Damaged(tx => H(tx).First = 0, () => list.Head, HeadAt(0));                       // empty by first, not by last
        ListAssert.Same(list, [a, b, c]);
    });

    [Fact]
    public Task A_transaction_the_engine_aborted_at_its_turns_end_is_refused_saying_why() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        var tx = await seg.BeginAsync(Big);
        list.Add(tx, Elem(0));
        await Task.Yield();   // the turn ends with the transaction open: the engine aborts it
        Assert.Equal(TxState.Aborted, tx.State);
        var ex = Assert.Throws<TxUsageException>(() => list.Add(tx, Elem(1)));
        Assert.Contains($"list 0x{HeadAt(0):X} in segment 1", ex.Message);
        Assert.Contains("invariant 1", ex.Message);   // why it is aborted, not only that it is
        tx.Dispose();
        ListAssert.Same(list, []);
    });

    /// <summary>Opens a one-segment engine and runs <paramref name="body"/> on its locality.</summary>
    private static async Task OnLocality(Func<Segment, Task> body)
    {
        using var dir = new ListDomain();
        await using var engine = await dir.OpenAsync();
        var loc = engine.Localities[0];
        await loc.RunAsync(() => body(loc.Segment!));
    }
}
