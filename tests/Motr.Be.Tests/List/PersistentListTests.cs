using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Motr.Be.List;
using Motr.Be.Segments;
using Motr.Be.Tx;
using Motr.Runtime;
using static Motr.Be.Tests.List.ListLayout;

namespace Motr.Be.Tests.List;

public sealed class PersistentListTests
{
    private static readonly TxCredit Big = new(64, 4096);

    /// <summary>Opens a one-segment engine and runs <paramref name="body"/> on its locality.</summary>
    private static async Task OnLocality(Func<Segment, Task> body)
    {
        using var dir = new ListDomain();
        await using var engine = await dir.OpenAsync();
        var loc = engine.Localities[0];
        await loc.RunAsync(() => body(loc.Segment!));
    }

    private static async Task<PersistentList> NewList(Segment seg, int index = 0, int linkOffset = LinkOffset)
    {
        using var tx = await seg.BeginAsync(PersistentList.CreateCredit);
        PersistentList.Create(tx, seg, HeadAt(index));
        _ = tx.Close();
        return new PersistentList(seg, HeadAt(index), linkOffset);
    }

    private static async Task Do(Segment seg, Action<Transaction> ops)
    {
        using var tx = await seg.BeginAsync(Big);
        ops(tx);
        _ = tx.Close();
    }

    // ---- format -------------------------------------------------------------------------------

    [Fact]
    public void Layout_matches_the_documented_offsets_and_magics()
    {
        Assert.Equal(48, Unsafe.SizeOf<ListHead>());
        Assert.Equal(ListHead.SizeOf, Unsafe.SizeOf<ListHead>());
        Assert.Equal(32, Unsafe.SizeOf<ListLink>());
        Assert.Equal(ListLink.SizeOf, Unsafe.SizeOf<ListLink>());
        Assert.Equal(0, (int)Marshal.OffsetOf<ListHead>(nameof(ListHead.Magic)));
        Assert.Equal(8, (int)Marshal.OffsetOf<ListHead>(nameof(ListHead.Version)));
        Assert.Equal(12, (int)Marshal.OffsetOf<ListHead>(nameof(ListHead.Flags)));
        Assert.Equal(16, (int)Marshal.OffsetOf<ListHead>(nameof(ListHead.First)));
        Assert.Equal(24, (int)Marshal.OffsetOf<ListHead>(nameof(ListHead.Count)));
        Assert.Equal(32, (int)Marshal.OffsetOf<ListHead>(nameof(ListHead.Last)));
        Assert.Equal(40, (int)Marshal.OffsetOf<ListHead>(nameof(ListHead.Reserved)));
        Assert.Equal(ListHead.FirstOffset, (int)Marshal.OffsetOf<ListHead>(nameof(ListHead.First)));
        Assert.Equal(ListHead.CountOffset, (int)Marshal.OffsetOf<ListHead>(nameof(ListHead.Count)));
        Assert.Equal(ListHead.LastOffset, (int)Marshal.OffsetOf<ListHead>(nameof(ListHead.Last)));
        Assert.Equal(0, (int)Marshal.OffsetOf<ListLink>(nameof(ListLink.Next)));
        Assert.Equal(8, (int)Marshal.OffsetOf<ListLink>(nameof(ListLink.Prev)));
        Assert.Equal(16, (int)Marshal.OffsetOf<ListLink>(nameof(ListLink.Owner)));
        Assert.Equal(24, (int)Marshal.OffsetOf<ListLink>(nameof(ListLink.Magic)));
        Assert.Equal("MOTRLSTH", Ascii(ListFormat.HeadMagic));
        Assert.Equal("MOTRLINK", Ascii(ListFormat.LinkedMagic));
        Assert.Equal("MOTRUNLK", Ascii(ListFormat.UnlinkedMagic));
    }

    private static string Ascii(ulong magic) => Encoding.ASCII.GetString(BitConverter.GetBytes(magic));

    [Fact]
    public Task Create_writes_an_empty_head() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        ref ListHead h = ref seg.At<ListHead>(HeadAt(0));
        Assert.Equal(ListFormat.HeadMagic, h.Magic);
        Assert.Equal(1u, h.Version);
        Assert.Equal(0u, h.Flags);
        Assert.Equal(0L, h.First);
        Assert.Equal(0L, h.Count);
        Assert.Equal(0L, h.Last);
        Assert.Equal(0UL, h.Reserved);
        Assert.True(list.IsEmpty);
        Assert.Equal(0L, list.Head);
        Assert.Equal(0L, list.Tail);
        Assert.Equal(0L, list.Count);
        ListAssert.Same(list, []);
        Assert.Equal(HeadAt(0), list.HeadOffset);
        Assert.Equal(LinkOffset, list.LinkOffset);
        Assert.Same(seg, list.Segment);
    });

    // ---- operations ---------------------------------------------------------------------------

    [Fact]
    public Task Add_on_empty_then_at_head() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        long a = Elem(0), b = Elem(1), c = Elem(2);
        await Do(seg, tx => list.Add(tx, a));
        ListAssert.Same(list, [a]);
        ref ListLink la = ref seg.At<ListLink>(a + LinkOffset);
        Assert.Equal(0L, la.Next);
        Assert.Equal(0L, la.Prev);
        Assert.Equal(HeadAt(0), la.Owner);
        Assert.Equal(ListFormat.LinkedMagic, la.Magic);
        await Do(seg, tx => list.Add(tx, b));
        ListAssert.Same(list, [b, a]);
        await Do(seg, tx => list.Add(tx, c));
        ListAssert.Same(list, [c, b, a]);
        Assert.Equal(c, seg.At<ListHead>(HeadAt(0)).First);
        Assert.Equal(a, seg.At<ListHead>(HeadAt(0)).Last);
        Assert.Equal(3L, seg.At<ListHead>(HeadAt(0)).Count);
        // The rest of an element is not touched.
        Assert.True(seg.Bytes(a, LinkOffset).ToArray().All(x => x == 0));
        Assert.True(seg.Bytes(a + LinkOffset + ListLink.SizeOf, (int)ElemSize - LinkOffset - ListLink.SizeOf).ToArray().All(x => x == 0));
    });

    [Fact]
    public Task AddTail_on_empty_then_at_tail() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        long a = Elem(0), b = Elem(1), c = Elem(2);
        await Do(seg, tx => list.AddTail(tx, a));
        ListAssert.Same(list, [a]);
        await Do(seg, tx => list.AddTail(tx, b));
        ListAssert.Same(list, [a, b]);
        await Do(seg, tx => { list.AddTail(tx, c); list.Add(tx, Elem(3)); });
        ListAssert.Same(list, [Elem(3), a, b, c]);
    });

    [Fact]
    public Task AddAfter_at_tail_and_in_the_middle() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        long a = Elem(0), b = Elem(1), c = Elem(2), d = Elem(3);
        await Do(seg, tx => list.Add(tx, a));
        await Do(seg, tx => list.AddAfter(tx, a, b));      // after the only element: new tail
        ListAssert.Same(list, [a, b]);
        await Do(seg, tx => list.AddAfter(tx, a, c));      // in the middle
        ListAssert.Same(list, [a, c, b]);
        await Do(seg, tx => list.AddAfter(tx, b, d));      // after the tail
        ListAssert.Same(list, [a, c, b, d]);
        Assert.Equal(d, list.Tail);
    });

    [Fact]
    public Task AddBefore_at_head_and_in_the_middle() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        long a = Elem(0), b = Elem(1), c = Elem(2), d = Elem(3);
        await Do(seg, tx => list.Add(tx, a));
        await Do(seg, tx => list.AddBefore(tx, a, b));     // before the only element: new head
        ListAssert.Same(list, [b, a]);
        await Do(seg, tx => list.AddBefore(tx, a, c));     // in the middle
        ListAssert.Same(list, [b, c, a]);
        await Do(seg, tx => list.AddBefore(tx, b, d));     // before the head
        ListAssert.Same(list, [d, b, c, a]);
        Assert.Equal(d, list.Head);
    });

    [Fact]
    public Task Del_single_head_tail_middle() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        long a = Elem(0), b = Elem(1), c = Elem(2), d = Elem(3), e = Elem(4);
        await Do(seg, tx => list.Add(tx, a));
        await Do(seg, tx => list.Del(tx, a));               // the only element
        ListAssert.Same(list, []);
        Assert.Equal(ListFormat.UnlinkedMagic, seg.At<ListLink>(a + LinkOffset).Magic);
        Assert.False(list.Contains(a));

        await Do(seg, tx => { foreach (var x in new[] { a, b, c, d, e }) list.AddTail(tx, x); });
        ListAssert.Same(list, [a, b, c, d, e]);
        await Do(seg, tx => list.Del(tx, a));               // head
        ListAssert.Same(list, [b, c, d, e]);
        await Do(seg, tx => list.Del(tx, e));               // tail
        ListAssert.Same(list, [b, c, d]);
        await Do(seg, tx => list.Del(tx, c));               // middle
        ListAssert.Same(list, [b, d]);
        // A deleted element can go back on, anywhere.
        await Do(seg, tx => { list.AddAfter(tx, b, c); list.AddTail(tx, a); list.Add(tx, e); });
        ListAssert.Same(list, [e, b, c, d, a]);
        await Do(seg, tx => { list.Del(tx, e); list.Del(tx, b); list.Del(tx, c); list.Del(tx, d); list.Del(tx, a); });
        ListAssert.Same(list, []);
    });

    [Fact]
    public Task Next_and_Prev_at_the_ends_and_middle() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        long a = Elem(0), b = Elem(1), c = Elem(2);
        await Do(seg, tx => { list.AddTail(tx, a); list.AddTail(tx, b); list.AddTail(tx, c); });
        Assert.Equal(b, list.Next(a));
        Assert.Equal(c, list.Next(b));
        Assert.Equal(0L, list.Next(c));
        Assert.Equal(0L, list.Prev(a));
        Assert.Equal(a, list.Prev(b));
        Assert.Equal(b, list.Prev(c));
    });

    [Fact]
    public Task Link_at_offset_zero_and_elements_moving_between_lists() => OnLocality(async seg =>
    {
        var l0 = await NewList(seg, 0, linkOffset: 0);
        var l1 = await NewList(seg, 1, linkOffset: 0);
        long a = Elem(0), b = Elem(1);
        await Do(seg, tx => { l0.Add(tx, a); l0.Add(tx, b); });
        await Do(seg, tx => { l0.Del(tx, a); l1.AddTail(tx, a); });
        ListAssert.Same(l0, [b]);
        ListAssert.Same(l1, [a]);
        Assert.Equal(HeadAt(1), seg.At<ListLink>(a).Owner);
        Assert.False(l0.Contains(a));
        Assert.True(l1.Contains(a));
    });

    [Fact]
    public Task Destroy_an_empty_list_and_create_again() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        await Do(seg, tx => list.Add(tx, Elem(0)));
        var ex = await Assert.ThrowsAsync<BeException>(() => Do(seg, tx => list.Destroy(tx)));
        Assert.Contains("not empty", ex.Message);
        ListAssert.Same(list, [Elem(0)]);
        await Do(seg, tx => { list.Del(tx, Elem(0)); list.Destroy(tx); });
        Assert.Equal(0UL, seg.At<ListHead>(HeadAt(0)).Magic);
        Assert.Throws<ObjectDisposedException>(() => list.Count);   // destroyed: the caller's mistake, not damage
        Assert.Throws<BeCorruptionException>(() => new PersistentList(seg, HeadAt(0), LinkOffset));
        var again = await NewList(seg);
        ListAssert.Same(again, []);
    });

    [Fact]
    public Task Enumerator_allows_deleting_the_current_element() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        await Do(seg, tx => { for (int i = 0; i < 10; i++) list.AddTail(tx, Elem(i)); });
        using (var tx = await seg.BeginAsync(PersistentList.DelCredit * 5))
        {
            int i = 0;
            foreach (long e in list)
                if (i++ % 2 == 0) list.Del(tx, e);
            Assert.Equal(10, i);
            _ = tx.Close();
        }
        ListAssert.Same(list, [Elem(1), Elem(3), Elem(5), Elem(7), Elem(9)]);
        using (var tx = await seg.BeginAsync(PersistentList.DelCredit * 5))
        {
            foreach (long e in list.Backward) list.Del(tx, e);
            _ = tx.Close();
        }
        ListAssert.Same(list, []);
    });

    [Fact]
    public Task Enumerator_allows_deleting_and_freeing_the_current_element() => OnLocality(async seg =>
    {
        // Elements from the allocator with the link at offset 0: freeing one writes the allocator's free-list
        // links over its link's next and prev, which the walk must not need again.
        var alloc = seg.Allocator;
        long head;
        using (var tx = await seg.BeginAsync(Motr.Be.Alloc.Allocator.AllocCredit + PersistentList.CreateCredit))
        {
            head = alloc.Alloc(tx, ListHead.SizeOf);
            PersistentList.Create(tx, seg, head);
            _ = tx.Close();
        }
        var list = new PersistentList(seg, head, linkOffset: 0);
        var elems = new long[12];
        using (var tx = await seg.BeginAsync((Motr.Be.Alloc.Allocator.AllocCredit + PersistentList.AddTailCredit) * elems.Length))
        {
            for (int i = 0; i < elems.Length; i++) { elems[i] = alloc.Alloc(tx, 64); list.AddTail(tx, elems[i]); }
            _ = tx.Close();
        }
        foreach (bool backward in new[] { false, true })
        {
            var seen = new List<long>();
            var credit = (PersistentList.DelCredit + Motr.Be.Alloc.Allocator.FreeCredit) * 6;
            using (var tx = await seg.BeginAsync(credit))
            {
                int i = 0;
                var walk = backward ? list.Backward.GetEnumerator() : list.GetEnumerator();
                while (walk.MoveNext())
                {
                    long e = walk.Current;
                    seen.Add(e);
                    if (backward || i++ % 2 == 0) { list.Del(tx, e); alloc.Free(tx, e); }
                }
                _ = tx.Close();
            }
            Assert.Equal(backward ? 6 : 12, seen.Count);
        }
        ListAssert.Same(list, []);
        Assert.Empty(list.Check());
        Assert.Empty(alloc.Check());
    });

    [Fact]
    public Task A_damaged_link_that_skips_or_cuts_the_list_stops_a_walk_in_either_direction() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        long[] e = Enumerable.Range(0, 6).Select(i => Elem(i)).ToArray();
        await Do(seg, tx => { foreach (long x in e) list.AddTail(tx, x); });
        byte[] before = ListAssert.Snapshot(seg);

        // Each damage a single link; before the back-link check a walk skipped elements or ended early without
        // a sign. The exception names the element whose back link does not fit, or where the chain ended.
        async Task Walks(Action<Transaction> damage, bool backward, long where, string expected)
        {
            using var tx = await seg.BeginAsync(Big);
            damage(tx);
            var seen = new List<long>();
            var ex = Assert.Throws<BeCorruptionException>(() =>
            {
                if (backward) foreach (long x in list.Backward) seen.Add(x);
                else foreach (long x in list) seen.Add(x);
            });
            Assert.Equal(where + LinkOffset, ex.Offset);
            Assert.Contains(expected, ex.Message);
            Assert.NotEmpty(list.Check());
            tx.Abort();
            Assert.Equal(before, ListAssert.Snapshot(seg));
        }
        await Walks(tx => tx.Capture<ListLink>(e[1] + LinkOffset).Next = e[4], backward: false, e[4], "skips part of the list");    // skip forward
        await Walks(tx => tx.Capture<ListLink>(e[4] + LinkOffset).Prev = e[1], backward: true, e[1], "skips part of the list");     // skip backward
        await Walks(tx => tx.Capture<ListLink>(e[0] + LinkOffset).Next = e[5], backward: false, e[5], "skips part of the list");    // jump to the tail
        await Walks(tx => tx.Capture<ListLink>(e[3] + LinkOffset).Next = e[1], backward: false, e[1], "skips part of the list");    // jump back
        await Walks(tx => tx.Capture<ListLink>(e[2] + LinkOffset).Next = 0, backward: false, e[2], "cuts the list short");          // cut forward
        await Walks(tx => tx.Capture<ListLink>(e[3] + LinkOffset).Prev = 0, backward: true, e[3], "cuts the list short");           // cut backward
        await Walks(tx => tx.Capture<ListLink>(e[2] + LinkOffset).Next = e[2], backward: false, e[2], "skips part of the list");    // self loop
        ListAssert.Same(list, e.ToList());
    });

    [Fact]
    public Task Queries_enumeration_and_ops_do_not_allocate() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        const int n = 200;
        using (var fill = await seg.BeginAsync(PersistentList.AddTailCredit * n))
        {
            for (int i = 0; i < n; i++) list.AddTail(fill, Elem(i));
            _ = fill.Close();
        }
        var credit = (PersistentList.DelCredit + PersistentList.InsertCredit) * n;
        // Warm-up: the pooled transaction grows its region and undo buffers once.
        for (int round = 0; round < 2; round++)
        {
            using var tx = await seg.BeginAsync(credit);
            long before = GC.GetAllocatedBytesForCurrentThread();
            long sum = 0;
            foreach (long e in list) sum += e;
            foreach (long e in list.Backward) sum -= e;
            for (long e = list.Head; e != 0; e = list.Next(e)) sum += list.Prev(e) + list.Count;
            for (int i = 0; i < n; i++)
            {
                long e = Elem(i);
                long next = list.Next(e);
                list.Del(tx, e);
                if (next != 0) list.AddAfter(tx, next, e); else list.Add(tx, e);
            }
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            tx.Abort();
            if (round == 1) Assert.Equal(0L, allocated);
            Assert.NotEqual(0L, sum);
        }
        ListAssert.Same(list, Enumerable.Range(0, n).Select(i => Elem(i)).ToList());
    });

    // ---- abort ----------------------------------------------------------------------------------

    [Fact]
    public Task Abort_restores_the_list_exactly() => OnLocality(async seg =>
    {
        var l0 = await NewList(seg, 0);
        var l1 = await NewList(seg, 1);
        long[] xs = Enumerable.Range(0, 8).Select(i => Elem(i)).ToArray();
        await Do(seg, tx => { for (int i = 0; i < 6; i++) l0.AddTail(tx, xs[i]); l1.Add(tx, xs[6]); });
        var expected0 = xs[..6].ToList();
        ListAssert.Same(l0, expected0);
        byte[] before = ListAssert.Snapshot(seg);

        using (var tx = await seg.BeginAsync(Big))
        {
            l0.Del(tx, xs[0]);                // head
            l0.Del(tx, xs[3]);                // middle
            l0.Del(tx, xs[5]);                // tail
            l0.AddAfter(tx, xs[1], xs[7]);
            l0.AddBefore(tx, xs[2], xs[0]);
            l0.Add(tx, xs[5]);
            l1.Del(tx, xs[6]);                // l1 becomes empty
            l0.AddTail(tx, xs[6]);
            l1.Add(tx, xs[3]);
            ListAssert.Same(l0, [xs[5], xs[1], xs[7], xs[0], xs[2], xs[4], xs[6]]);
            ListAssert.Same(l1, [xs[3]]);
            tx.Abort();
        }
        ListAssert.Same(l0, expected0);
        ListAssert.Same(l1, [xs[6]]);
        Assert.Equal(before, ListAssert.Snapshot(seg));

        // Abort of a create and of a destroy.
        using (var tx = await seg.BeginAsync(PersistentList.CreateCredit))
        {
            PersistentList.Create(tx, seg, HeadAt(2));
            Assert.Equal(0L, new PersistentList(seg, HeadAt(2), LinkOffset).Count);
            tx.Abort();
        }
        Assert.Equal(before, ListAssert.Snapshot(seg));
        await Do(seg, tx => l1.Del(tx, xs[6]));
        before = ListAssert.Snapshot(seg);
        using (var tx = await seg.BeginAsync(PersistentList.DestroyCredit))
        {
            l1.Destroy(tx);
            tx.Abort();
        }
        Assert.Equal(before, ListAssert.Snapshot(seg));
        ListAssert.Same(l1, []);
    });

    [Fact]
    public async Task Lists_survive_reopen()
    {
        using var dir = new ListDomain();
        long[] xs = Enumerable.Range(0, 5).Select(i => Elem(i)).ToArray();
        await using (var engine = await dir.OpenAsync())
        {
            var loc = engine.Localities[0];
            await loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                var list = await NewList(seg);
                await Do(seg, tx => { foreach (var x in xs) list.AddTail(tx, x); });
                await Do(seg, tx => list.Del(tx, xs[2]));
                using var aborted = await seg.BeginAsync(Big);
                list.Del(aborted, xs[0]);
                aborted.Abort();
            });
        }
        await using (var engine = await dir.OpenAsync())
        {
            var loc = engine.Localities[0];
            await loc.RunAsync(() =>
            {
                var list = new PersistentList(loc.Segment!, HeadAt(0), LinkOffset);
                ListAssert.Same(list, [xs[0], xs[1], xs[3], xs[4]]);
                Assert.Equal(ListFormat.UnlinkedMagic, loc.Segment!.At<ListLink>(xs[2] + LinkOffset).Magic);
            });
        }
    }

    // ---- misuse -----------------------------------------------------------------------------------

    [Fact]
    public Task Misuse_throws_naming_segment_and_offset_and_changes_nothing() => OnLocality(async seg =>
    {
        var l0 = await NewList(seg, 0);
        var l1 = await NewList(seg, 1);
        long a = Elem(0), b = Elem(1), c = Elem(2), fresh = Elem(3);
        await Do(seg, tx => { l0.AddTail(tx, a); l0.AddTail(tx, b); l1.Add(tx, c); });
        byte[] before = ListAssert.Snapshot(seg);

        using (var tx = await seg.BeginAsync(Big))
        {
            void Expect(Action op, params string[] fragments)
            {
                var ex = Assert.Throws<BeException>(op);
                Assert.Contains("segment 1", ex.Message);
                Assert.Contains("list 0x", ex.Message);
                foreach (var f in fragments) Assert.Contains(f, ex.Message);
                Assert.Equal(before, ListAssert.Snapshot(seg));
            }

            // Adding an element that is already linked, in this list or another.
            Expect(() => l0.Add(tx, a), $"0x{a:X}", "already linked in this list");
            Expect(() => l0.AddTail(tx, b), $"0x{b:X}", "already linked");
            Expect(() => l0.AddAfter(tx, a, c), $"0x{c:X}", $"already linked in list 0x{HeadAt(1):X}");
            Expect(() => l0.AddBefore(tx, b, a), "already linked");
            // Deleting an element that is not on the list.
            Expect(() => l0.Del(tx, fresh), $"0x{fresh:X}", "not linked");
            Expect(() => l0.Del(tx, c), $"0x{c:X}", $"another list (head 0x{HeadAt(1):X})");
            Expect(() => l0.AddAfter(tx, fresh, Elem(4)), "existing element", $"0x{fresh:X}");
            Expect(() => l0.AddBefore(tx, c, Elem(4)), "existing element", $"0x{c:X}");
            Expect(() => l0.Next(fresh), "not on this list");
            Expect(() => l0.Prev(c), "not on this list");
            // Offsets outside the segment or that cannot hold a link.
            Expect(() => l0.Add(tx, 0), "0x0", "null");
            Expect(() => l0.Add(tx, -64), "cannot hold a link");
            Expect(() => l0.Add(tx, seg.Size), $"0x{seg.Size:X}", "cannot hold a link");
            Expect(() => l0.Add(tx, seg.Size - LinkOffset - 16), "cannot hold a link");   // link runs past the end
            Expect(() => l0.Add(tx, long.MaxValue), "cannot hold a link");
            Expect(() => l0.Add(tx, 100), "0x64", "cannot hold a link");                // inside the segment header
            Expect(() => l0.Add(tx, Elem(5) + 4), "cannot hold a link");                // misaligned
            Expect(() => l0.Del(tx, seg.Size + 4096), "cannot hold a link");
            // An element whose link would overlap the head or a neighbour's link.
            Expect(() => l0.Add(tx, HeadAt(0) + 16 - LinkOffset), "overlaps the list head");
            Expect(() => l0.AddAfter(tx, a, a + 8), "overlaps the link of element");
            // Deleting twice.
            _ = tx.Close();
        }
        await Do(seg, tx => l0.Del(tx, a));
        var twice = await Assert.ThrowsAsync<BeException>(() => Do(seg, tx => l0.Del(tx, a)));
        Assert.Contains("was deleted from a list", twice.Message);
        ListAssert.Same(l0, [b]);
        ListAssert.Same(l1, [c]);

        // Creating over a live list, and bad head offsets.
        var exists = await Assert.ThrowsAsync<BeException>(() => Do(seg, tx => PersistentList.Create(tx, seg, HeadAt(0))));
        Assert.Contains($"list 0x{HeadAt(0):X} in segment 1", exists.Message);
        Assert.Contains("already exists", exists.Message);
        foreach (long bad in new long[] { 0, 1536, 4095, HeadAt(3) + 4, seg.Size - 40, -8 })
        {
            var e1 = await Assert.ThrowsAsync<BeException>(() => Do(seg, tx => PersistentList.Create(tx, seg, bad)));
            Assert.Contains("must be 8-byte aligned inside", e1.Message);
            Assert.Throws<BeException>(() => new PersistentList(seg, bad, LinkOffset));
        }
        Assert.Throws<BeException>(() => new PersistentList(seg, HeadAt(0), 3));
        Assert.Throws<BeException>(() => new PersistentList(seg, HeadAt(0), -8));
        // Binding to bytes that hold no list.
        var none = Assert.Throws<BeCorruptionException>(() => new PersistentList(seg, HeadAt(5), LinkOffset));
        Assert.Equal(HeadAt(5), none.Offset);
        Assert.Contains("no list head here", none.Message);
        // A default value.
        Assert.Throws<InvalidOperationException>(() => default(PersistentList).Count);
        Assert.False(default(PersistentList).Contains(a));
        Assert.NotEmpty(default(PersistentList).Check());
        // A capture beyond the credit throws before anything changes.
        before = ListAssert.Snapshot(seg);
        using (var tx = await seg.BeginAsync(new TxCredit(2, 1000)))
        {
            Assert.Throws<TxUsageException>(() => l0.Add(tx, a));     // needs 3 regions on a non-empty list
            Assert.Equal(before, ListAssert.Snapshot(seg));
            _ = tx.Close();
        }
        ListAssert.Same(l0, [b]);
    });

    [Fact]
    public async Task A_transaction_of_another_segment_is_refused()
    {
        using var dir = new ListDomain(segments: 2);
        await using var engine = await dir.OpenAsync();
        Locality l0 = engine.Localities[0], l1 = engine.Localities[1];
        var list = await l0.RunAsync(async () => await NewList(l0.Segment!));
        // A transaction of segment 2, opened on its locality (it changed nothing, so it may outlive the turn).
        var tx = await l1.RunAsync(async () => await l1.Segment!.BeginAsync(Big));
        await l1.RunAsync(() =>
        {
            // On segment 2's locality the list of segment 1 is off its owner thread: refused before the transaction is looked at.
            Assert.Contains("owner thread", Assert.Throws<InvalidOperationException>(() => list.Add(tx, Elem(0))).Message);
        });
        await l0.RunAsync(() =>
        {
            var ex = Assert.Throws<BeException>(() => list.Add(tx, Elem(0)));
            Assert.Contains("segment 1", ex.Message);
            Assert.Contains("transaction is on segment 2", ex.Message);
            var ex2 = Assert.Throws<BeException>(() => PersistentList.Create(tx, l0.Segment!, HeadAt(1)));
            Assert.Contains("transaction is on segment 2", ex2.Message);
            Assert.Equal(default, tx.Used);
            ListAssert.Same(list, []);
        });
        await l1.RunAsync(() => tx.Dispose());
    }

    // ---- corruption -----------------------------------------------------------------------------

    [Fact]
    public Task Check_and_walks_catch_broken_links_cycles_and_counts() => OnLocality(async seg =>
    {
        var list = await NewList(seg);
        long a = Elem(0), b = Elem(1), c = Elem(2), d = Elem(3);
        await Do(seg, tx => { list.AddTail(tx, a); list.AddTail(tx, b); list.AddTail(tx, c); list.AddTail(tx, d); });
        byte[] before = ListAssert.Snapshot(seg);

        // Each damage is made in a transaction and aborted, which must also undo it.
        async Task Damage(Action<Transaction> damage, string expected, bool walkThrows)
        {
            using var tx = await seg.BeginAsync(Big);
            damage(tx);
            var problems = list.Check();
            Assert.Contains(problems, p => p.Contains(expected));
            Assert.All(problems, p => Assert.Contains($"list 0x{HeadAt(0):X} in segment 1", p));
            if (walkThrows)
                Assert.Throws<BeCorruptionException>(() => { foreach (long _ in list) { } foreach (long _ in list.Backward) { } });
            tx.Abort();
            Assert.Equal(before, ListAssert.Snapshot(seg));
            Assert.Empty(list.Check());
        }

        ref ListLink L(long e) => ref seg.At<ListLink>(e + LinkOffset);
        await Damage(tx => tx.Capture<ListLink>(c + LinkOffset).Prev = a, $"0x{c:X}: its prev is 0x{a:X}, expected 0x{b:X}", walkThrows: true);
        await Damage(tx => tx.Capture<ListLink>(d + LinkOffset).Next = b, "its next is", walkThrows: true);        // cycle d -> b
        await Damage(tx => tx.Capture<ListLink>(d + LinkOffset).Next = d, "past the head's count", walkThrows: true); // self loop
        await Damage(tx => { tx.Capture<ListLink>(d + LinkOffset).Next = b; tx.Capture<ListLink>(b + LinkOffset).Prev = d; },
            $"0x{b:X}: its prev is 0x{d:X}, expected 0x{a:X}", walkThrows: true);                              // cycle with matching back pointer
        await Damage(tx => { tx.Capture<ListLink>(d + LinkOffset).Next = b; tx.Capture<ListLink>(b + LinkOffset).Prev = d; tx.Capture<ListHead>(HeadAt(0)).Count = long.MaxValue; },
            $"0x{b:X}: its prev is 0x{d:X}, expected 0x{a:X}", walkThrows: true);                              // cycle under a count of 2^63 - 1: the walk still ends
        await Damage(tx => tx.Capture<ListHead>(HeadAt(0)).Count = 7, "visited 4 elements but the head's count is 7", walkThrows: false);
        await Damage(tx => tx.Capture<ListHead>(HeadAt(0)).Count = 3, "past the head's count 3", walkThrows: true);
        await Damage(tx => tx.Capture<ListLink>(b + LinkOffset).Magic = 0x1234, "link magic is 0x0000000000001234", walkThrows: true);
        await Damage(tx => tx.Capture<ListLink>(b + LinkOffset).Owner = HeadAt(1), $"on list 0x{HeadAt(1):X}", walkThrows: true);
        await Damage(tx => tx.Capture<ListLink>(a + LinkOffset).Next = seg.Size + 8, "outside the data area", walkThrows: true);
        await Damage(tx => tx.Capture<ListHead>(HeadAt(0)).Last = c, "ended at 0x", walkThrows: true);
        await Damage(tx => tx.Capture<ListHead>(HeadAt(0)).Reserved = 1, "reserved field", walkThrows: false);
        await Damage(tx => tx.Capture<ListHead>(HeadAt(0)).Magic = 0x1234, "head magic is 0x0000000000001234", walkThrows: true);
        await Damage(tx => tx.Capture<ListHead>(HeadAt(0)).Version = 9, "head version is 9", walkThrows: true);
        Assert.Equal(c, L(b).Next);

        // Operations meeting a damaged neighbour report corruption and change nothing.
        using (var tx = await seg.BeginAsync(Big))
        {
            tx.Capture<ListLink>(c + LinkOffset).Magic = 0;
            byte[] damaged = ListAssert.Snapshot(seg);
            var ex = Assert.Throws<BeCorruptionException>(() => list.Del(tx, b));
            Assert.Equal(c + LinkOffset, ex.Offset);
            Assert.Contains("not a valid member", ex.Message);
            Assert.Throws<BeCorruptionException>(() => list.AddAfter(tx, b, Elem(9)));
            Assert.Equal(damaged, ListAssert.Snapshot(seg));
            tx.Abort();
        }
        ListAssert.Same(list, [a, b, c, d]);
        using (var tx = await seg.BeginAsync(Big))
        {
            tx.Capture<ListHead>(HeadAt(0)).Count = 0;
            var ex = Assert.Throws<BeCorruptionException>(() => list.Del(tx, b));
            Assert.Equal(HeadAt(0) + ListHead.CountOffset, ex.Offset);
            Assert.Contains("count is 0 but its first/last say the list is not empty", ex.Message);
            tx.Abort();
        }
        var other = await NewList(seg, 1);
        using (var tx = await seg.BeginAsync(Big))
        {
            tx.Capture<ListHead>(HeadAt(1)).Count = 3;
            var ex = Assert.Throws<BeCorruptionException>(() => other.AddTail(tx, Elem(9)));
            Assert.Contains("count is 3 but its first/last say the list is empty", ex.Message);
            Assert.Equal(0UL, seg.At<ListLink>(Elem(9) + LinkOffset).Magic);
            tx.Abort();
        }
        ListAssert.Same(other, []);
    });
}
