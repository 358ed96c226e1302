using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;

namespace Motr.Be.Tests.Tx;

public class SavepointTests
{
    private const long Off = Engines.DataStart + 256;

    [Fact]
    public async Task RollbackTo_undoes_only_what_came_after_the_savepoint_and_the_rest_persists()
    {
        var storage = new SimStorage();
        var o = Engines.Sim(storage, segments: 1);
        o.VerifyCaptures = true;
        await using (var e = await Engines.Open(o))
        {
            var loc = e.Localities[0];
            await loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                using var tx = await seg.BeginAsync(new TxCredit(8, 1024));
                tx.Capture<long>(Off) = 1;
                var used = tx.Used;
                var sp = tx.Savepoint();
                tx.Capture<long>(Off + 8) = 2;
                tx.Capture<long>(Off) = 3;                // the same bytes again, after the savepoint
                tx.DeferChecksum(Off + 512, 64, 60);
                tx.RollbackTo(sp);
                Assert.Equal(1, seg.At<long>(Off));
                Assert.Equal(0, seg.At<long>(Off + 8));
                Assert.Equal(used, tx.Used);
                tx.Capture<long>(Off + 16) = 4;            // the tx goes on
                await tx.Close();
            });
            Assert.Empty(e.Domain.CaptureViolations);
            storage = storage.Clone();
        }
        await using (var e = await Engines.Open(Engines.Sim(storage, segments: 1)))
        {
            var loc = e.Localities[0];
            var (a, b, c) = await loc.RunAsync(() => (loc.Segment!.At<long>(Off), loc.Segment!.At<long>(Off + 8), loc.Segment!.At<long>(Off + 16)));
            Assert.Equal((1L, 0L, 4L), (a, b, c));
        }
    }

    [Fact]
    public async Task A_transaction_rolled_back_to_no_change_may_wait_again()
    {
        var storage = new SimStorage();
        await using var e = await Engines.Open(Engines.Sim(storage, segments: 1));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            using var tx = await seg.BeginAsync(new TxCredit(8, 1024));
            tx.CancelChecksum(Off + 512);                  // a checksum mark before: marks change no memory
            var sp = tx.Savepoint();
            tx.Capture<long>(Off) = 5;                     // what an operation that then ran out of space did
            tx.RollbackTo(sp);
            await Task.Yield();                            // a new turn: before, the engine aborted the tx here as left open
            Assert.Equal(TxState.Open, tx.State);
            tx.Capture<long>(Off) = 6;
            await tx.Close();
        });
        Assert.Equal(0, e.Domain.InvariantViolations);
        Assert.Equal(6, await loc.RunAsync(() => loc.Segment!.At<long>(Off)));
    }

    [Fact]
    public async Task A_savepoint_of_another_transaction_is_refused()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Engines.Options(dir.Path, segments: 1));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            using var t1 = await loc.Segment!.BeginAsync(TxCredit.Region(8));
            using var t2 = await loc.Segment!.BeginAsync(TxCredit.Region(8));
            var sp = t1.Savepoint();
            Assert.Throws<TxUsageException>(() => t2.RollbackTo(sp));
        });
    }
}
