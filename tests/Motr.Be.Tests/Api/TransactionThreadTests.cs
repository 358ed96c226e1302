using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Be.Tests.Api;

/// <summary>
/// A transaction belongs to its segment's owner thread: changed, closed, aborted or disposed from anywhere else it is
/// refused with InvalidOperationException, and nothing of it or its segment changes.
/// </summary>
public class TransactionThreadTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);
    private const long Off = Engines.DataStart;

    private static void AssertOffOwner(Action misuse)
    {
        var ex = Assert.Throws<InvalidOperationException>(misuse);
        Assert.IsNotType<ObjectDisposedException>(ex);
        Assert.Contains("owner thread", ex.Message);
    }

    [Fact]
    public async Task A_transaction_used_from_another_thread_is_refused_and_left_as_it_was()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Engines.Options(dir.Path));
        var loc = e.Localities[0];
        var seg = loc.Segment!;
        // Opened on the locality, nothing captured (so it may live across turns), then used from the test's thread.
        // Before: each call went through, racing the locality on the segment's memory, its open group and its pool.
        var tx = await loc.RunAsync(async () => await seg.BeginAsync(TxCredit.Region(8) * 2)).WaitAsync(T);
        AssertOffOwner(() => tx.Capture<long>(Off) = 5);
        AssertOffOwner(() => tx.SetPayload([1, 2]));
        AssertOffOwner(() => tx.Close());
        AssertOffOwner(() => tx.Abort());
        AssertOffOwner(() => tx.Dispose());
        Assert.Equal(TxState.Open, tx.State);
        Assert.Equal(new TxCredit(0, 0), tx.Used);
        long closed = seg.TxStats.Closed;
        await loc.RunAsync(() =>
        {
            Assert.Equal(0, seg.At<long>(Off));
            tx.Capture<long>(Off) = 6;  // on its thread it goes on as if nothing had happened
            _ = tx.Close();
            tx.Dispose();
        }).WaitAsync(T);
        Assert.Equal(closed + 1, seg.TxStats.Closed);
    }

    [Fact]
    public async Task A_transaction_ended_on_another_locality_is_refused()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Engines.Options(dir.Path));
        var (a, b) = (e.Localities[0], e.Localities[1]);
        var tx = await a.RunAsync(async () =>
        {
            var t = await a.Segment!.BeginAsync(TxCredit.Region(8));
            return t;
        }).WaitAsync(T);
        await b.RunAsync(() =>
        {
            AssertOffOwner(() => tx.Capture<long>(Off) = 1);
            AssertOffOwner(() => tx.Close());
            AssertOffOwner(() => tx.Abort());
        }).WaitAsync(T);
        await a.RunAsync(() => tx.Dispose()).WaitAsync(T);
        Assert.Equal(0, b.Faults);
    }

    [Fact]
    public async Task Opening_a_transaction_on_a_closed_segment_is_refused_as_disposed()
    {
        using var dir = new TempDir();
        var e = await Engines.Open(Engines.Options(dir.Path));
        var seg = e.Localities[0].Segment!;
        await e.DisposeAsync();
        // Before: "must be opened on the segment's owner thread", which sends the reader looking for the wrong bug.
        var ex = Assert.Throws<ObjectDisposedException>(() => seg.TryBegin(TxCredit.Region(8), out _));
        Assert.Contains("closed", ex.Message);
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await seg.BeginAsync(TxCredit.Region(8)));
    }
}

public class SegmentFlushThreadTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task FlushAsync_off_the_owner_thread_is_refused()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Engines.Options(dir.Path));
        var loc = e.Localities[0];
        var seg = loc.Segment!;
        await loc.RunAsync(async () =>
        {
            using var tx = await seg.BeginAsync(TxCredit.Region(8));
            tx.Capture<long>(Engines.DataStart) = 1;
            _ = tx.Close();
        }).WaitAsync(T);
        // Before: it sealed the open group from the test's thread, reading live memory and the group while the owner
        // could be changing them.
        var ex = Assert.Throws<InvalidOperationException>(() => seg.FlushAsync());
        Assert.Contains("owner thread", ex.Message);
        await loc.RunAsync(async () => await seg.FlushAsync()).WaitAsync(T); // on the owner it flushes
        Assert.Equal(1, seg.TxStats.Closed);
    }
}
