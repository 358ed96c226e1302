using Motr.Be.List;
using Motr.Be.Segments;
using Motr.Be.Tx;
using static Motr.Be.Tests.List.ListLayout;

namespace Motr.Be.Tests.List;

/// <summary>
/// Every operation, in every position it can take, runs in a transaction opened with exactly its
/// published credit (the transaction throws if the operation captures more), uses exactly the regions
/// and bytes worked out for that case, and the worst case uses the whole credit — so the credit is
/// both sufficient and tight. One region or one byte less makes the worst case fail without changing
/// the list.
/// </summary>
public sealed class PersistentListCreditTests
{
    [Fact]
    public void Credits_have_the_documented_values()
    {
        Assert.Equal(new TxCredit(2, 52), PersistentList.CreateCredit);
        Assert.Equal(new TxCredit(2, 12), PersistentList.DestroyCredit);
        Assert.Equal(new TxCredit(4, 60), PersistentList.AddCredit);
        Assert.Equal(new TxCredit(4, 60), PersistentList.AddTailCredit);
        Assert.Equal(new TxCredit(5, 60), PersistentList.InsertCredit);
        Assert.Equal(new TxCredit(5, 36), PersistentList.DelCredit);
    }

    /// <summary>The list operations under test.</summary>
    public enum Op { Add, AddTail, AddAfter, AddBefore, Del }

    private static TxCredit CreditOf(Op op) => op switch
    {
        Op.Add => PersistentList.AddCredit,
        Op.AddTail => PersistentList.AddTailCredit,
        Op.AddAfter or Op.AddBefore => PersistentList.InsertCredit,
        _ => PersistentList.DelCredit,
    };

    /// <summary>
    /// Builds a list of <paramref name="size"/> elements (0..size-1), then runs <paramref name="op"/> at
    /// position <paramref name="at"/> with element <c>size</c> as the new one, in a tx with exactly the
    /// op's credit (or that minus <paramref name="less"/>); returns what the tx used.
    /// </summary>
    private static async Task<TxCredit> Run(Segment seg, int listIndex, int size, Op op, int at, TxCredit less = default)
    {
        long headOffset = HeadAt(listIndex);
        using (var tx = await seg.BeginAsync(PersistentList.CreateCredit))
        {
            PersistentList.Create(tx, seg, headOffset);
            Assert.Equal(PersistentList.CreateCredit, tx.Used);
            _ = tx.Close();
        }
        var list = new PersistentList(seg, headOffset, LinkOffset);
        long Elem(int i) => ListLayout.Elem(listIndex * 16 + i);
        var model = new List<long>();
        for (int i = 0; i < size; i++)
        {
            using var tx = await seg.BeginAsync(PersistentList.AddTailCredit);
            list.AddTail(tx, Elem(i));
            _ = tx.Close();
            model.Add(Elem(i));
        }
        ListAssert.Same(list, model);
        byte[] before = ListAssert.Snapshot(seg);

        var credit = CreditOf(op);
        credit = new TxCredit(credit.Regions - less.Regions, credit.Bytes - less.Bytes);
        using var t = await seg.BeginAsync(credit);
        long fresh = Elem(size);
        void Apply()
        {
            switch (op)
            {
                case Op.Add: list.Add(t, fresh); model.Insert(0, fresh); break;
                case Op.AddTail: list.AddTail(t, fresh); model.Add(fresh); break;
                case Op.AddAfter: list.AddAfter(t, model[at], fresh); model.Insert(at + 1, fresh); break;
                case Op.AddBefore: list.AddBefore(t, model[at], fresh); model.Insert(at, fresh); break;
                case Op.Del: list.Del(t, model[at]); model.RemoveAt(at); break;
            }
        }
        if (less != default)
        {
            var ex = Assert.Throws<TxUsageException>(Apply);
            Assert.Contains("exceeds its credit", ex.Message);
            Assert.Equal(before, ListAssert.Snapshot(seg));
            t.Abort();
            ListAssert.Same(list, model);
            return default;
        }
        Apply();
        var used = t.Used;
        _ = t.Close();
        ListAssert.Same(list, model);
        return used;
    }

    public static TheoryData<Op, int, int, int, int> Cases => new()
    {
        // op, list size, position, regions used, bytes used (each includes the head checksum: 1 region / 4 bytes)
        { Op.Add, 0, 0, 3, 60 },          // link + First/Count/Last
        { Op.Add, 1, 0, 4, 60 },          // link + old first's prev + First/Count
        { Op.Add, 5, 0, 4, 60 },
        { Op.AddTail, 0, 0, 3, 60 },
        { Op.AddTail, 1, 0, 4, 60 },      // link + old last's next + Count/Last
        { Op.AddTail, 5, 0, 4, 60 },
        { Op.AddAfter, 1, 0, 4, 60 },     // after the only element: link + its next + Count/Last
        { Op.AddAfter, 5, 4, 4, 60 },     // after the tail
        { Op.AddAfter, 5, 0, 5, 60 },     // after the head: link + next + prev + Count
        { Op.AddAfter, 5, 2, 5, 60 },
        { Op.AddBefore, 1, 0, 4, 60 },    // before the only element: link + its prev + First/Count
        { Op.AddBefore, 5, 0, 4, 60 },    // before the head
        { Op.AddBefore, 5, 4, 5, 60 },    // before the tail
        { Op.AddBefore, 5, 2, 5, 60 },
        { Op.Del, 1, 0, 3, 36 },          // the only element: magic + First/Count/Last
        { Op.Del, 5, 0, 4, 36 },          // head: magic + next's prev + First/Count
        { Op.Del, 5, 4, 4, 36 },          // tail: magic + prev's next + Count/Last
        { Op.Del, 5, 2, 5, 36 },          // middle: magic + prev's next + next's prev + Count
        { Op.Del, 2, 1, 4, 36 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Each_case_fits_its_credit_and_uses_what_it_changes(Op op, int size, int at, int regions, int bytes)
    {
        using var dir = new ListDomain();
        await using var engine = await dir.OpenAsync();
        var loc = engine.Localities[0];
        await loc.RunAsync(async () =>
        {
            var used = await Run(loc.Segment!, 0, size, op, at);
            Assert.Equal(new TxCredit(regions, bytes), used);
            Assert.True(CreditOf(op).Covers(used));
        });
    }

    [Fact]
    public async Task Worst_cases_use_the_whole_credit_and_fail_with_less()
    {
        using var dir = new ListDomain();
        await using var engine = await dir.OpenAsync();
        var loc = engine.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            int li = 0;
            // The worst case of each op uses exactly its credit...
            Assert.Equal(PersistentList.AddCredit, await Run(seg, li++, 3, Op.Add, 0));
            Assert.Equal(PersistentList.AddTailCredit, await Run(seg, li++, 3, Op.AddTail, 0));
            Assert.Equal(PersistentList.InsertCredit, await Run(seg, li++, 3, Op.AddAfter, 1));
            Assert.Equal(PersistentList.InsertCredit, await Run(seg, li++, 3, Op.AddBefore, 1));
            Assert.Equal(PersistentList.DelCredit, await Run(seg, li++, 3, Op.Del, 1));
            // ...and one region or one byte less is refused before anything changes.
            foreach (var op in new[] { Op.Add, Op.AddTail, Op.AddAfter, Op.AddBefore, Op.Del })
            {
                await Run(seg, li++, 3, op, 1, less: new TxCredit(1, 0));
                await Run(seg, li++, 3, op, 1, less: new TxCredit(0, 1));
            }
            // Destroy: exactly its credit.
            var empty = new PersistentList(seg, HeadAt(0), LinkOffset);
            using (var t2 = await seg.BeginAsync(PersistentList.DelCredit * 4))
            {
                while (!empty.IsEmpty) empty.Del(t2, empty.Head);
                _ = t2.Close();
            }
            using var tx = await seg.BeginAsync(PersistentList.DestroyCredit);
            empty.Destroy(tx);
            Assert.Equal(PersistentList.DestroyCredit, tx.Used);
            _ = tx.Close();
        });
    }

    [Fact]
    public async Task Credits_compose_for_multi_op_transactions()
    {
        using var dir = new ListDomain();
        await using var engine = await dir.OpenAsync();
        var loc = engine.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            var credit = PersistentList.CreateCredit + PersistentList.AddCredit + PersistentList.AddTailCredit
                + PersistentList.InsertCredit * 2 + PersistentList.DelCredit * 2;
            using var tx = await seg.BeginAsync(credit);
            PersistentList.Create(tx, seg, HeadAt(0));
            var list = new PersistentList(seg, HeadAt(0), LinkOffset);
            long a = Elem(0), b = Elem(1), c = Elem(2), d = Elem(3);
            list.Add(tx, a);
            list.AddTail(tx, b);
            list.AddAfter(tx, a, c);
            list.AddBefore(tx, b, d);
            list.Del(tx, c);
            list.Del(tx, a);
            Assert.True(credit.Covers(tx.Used));
            _ = tx.Close();
            ListAssert.Same(list, [d, b]);
        });
    }
}
