using Motr.Be.Segments;
using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Be.Tests.Tx;

/// <summary>
/// A failed fdatasync on one thread followed by a "successful" one of the same file on another (Linux reports a
/// writeback error once, and the failed pages never reach the disk): nothing may be reported durable, nor a
/// checkpoint recorded, over the lost bytes. A helper's fault-injection probe lost acknowledged transactions both
/// ways; the hooks below hold each thread where the probe found the window (the sleep stands for a preemption
/// between the failed sync and the domain's failure).
/// </summary>
public class FailedSyncTests
{
    private const long Off = Engines.DataStart;

    private static Task Write(Engine e, long offset, long value, TxCredit extra = default, Action<Segment, Transaction>? also = null)
    {
        var loc = e.Localities[0];
        return loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            using var tx = await seg.BeginAsync(TxCredit.Region(8) + extra);
            also?.Invoke(seg, tx);
            tx.Capture<long>(offset) = value;
            await tx.Close();
        });
    }

    private static async Task<(long A, long B)> ReadAfterPowerCut(SimStorage sim, CrashVariant variant)
    {
        var image = sim.CrashImage(sim.OpCount, variant, 1);
        await using var e = await Engines.Open(Engines.Sim(image, segments: 1));
        var loc = e.Localities[0];
        return await loc.RunAsync(() => (loc.Segment!.At<long>(Off), loc.Segment!.At<long>(Off + 8)));
    }

    [Fact]
    public async Task A_log_sync_that_follows_a_failed_one_reports_nothing_durable()
    {
        var sim = new SimStorage();
        var hooks = new HookStorage(sim);
        var o = Engines.Sim(sim, segments: 1);
        o.Storage = hooks;
        var recordWritten = new ManualResetEventSlim();
        var checkpointFailed = new ManualResetEventSlim();
        int armed = 0;
        var e = await Engines.Open(o);
        hooks.Before = (f, op, _, _) =>
        {
            if (Volatile.Read(ref armed) == 0 || f.Name != BeConstants.LogFileName) return;
            string thread = Thread.CurrentThread.Name ?? "";
            if (thread == "motr-log-writer" && op == "write") recordWritten.Set();
            if (thread == "motr-log-writer" && op == "flush") checkpointFailed.Wait(2000);
            if (thread == "motr-checkpoint" && op == "flush")
            {
                recordWritten.Wait(2000);
                Volatile.Write(ref armed, 0);
                var ex = f.LoseUnsynced("fdatasync motr.log"); // the writer's record pages are dropped
                checkpointFailed.Set();
                Thread.Sleep(300);
                throw ex;
            }
        };
        await Write(e, Off, 1);
        Volatile.Write(ref armed, 1);
        var checkpoint = e.Domain.CheckpointAsync();
        var second = Write(e, Off + 8, 2);
        Exception? secondError = await Record.ExceptionAsync(() => second.WaitAsync(TimeSpan.FromSeconds(30)));
        await Record.ExceptionAsync(() => checkpoint.WaitAsync(TimeSpan.FromSeconds(30)));
        await e.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        hooks.Before = null;
        foreach (var variant in new[] { CrashVariant.DropUnsynced, CrashVariant.KeepUnsynced })
        {
            var (a, b) = await ReadAfterPowerCut(sim, variant);
            Assert.Equal(1, a);
            if (secondError is null) Assert.True(b == 2, $"{variant}: a transaction reported persistent is lost");
        }
    }

    [Fact]
    public async Task A_checkpoint_is_not_recorded_after_another_threads_sync_of_the_segment_failed()
    {
        var sim = new SimStorage();
        var hooks = new HookStorage(sim);
        var o = Engines.Sim(sim, segments: 1);
        o.Storage = hooks;
        var growthFailed = new ManualResetEventSlim();
        int armed = 0;
        var e = await Engines.Open(o);
        string seg1 = BeConstants.SegmentFileName(1);
        hooks.Before = (f, op, _, _) =>
        {
            if (Volatile.Read(ref armed) == 0 || f.Name != seg1 || op != "flush") return;
            string thread = Thread.CurrentThread.Name ?? "";
            if (thread == "motr-checkpoint") growthFailed.Wait(2000);
            if (thread == "motr-placer")
            {
                Volatile.Write(ref armed, 0);
                var ex = f.LoseUnsynced("fdatasync seg-0001.motr"); // the placed bytes of A are dropped
                growthFailed.Set();
                Thread.Sleep(300);
                throw ex;
            }
        };
        await Write(e, Off, 1);      // A
        await Task.Delay(100);       // placed
        Volatile.Write(ref armed, 1);
        var checkpoint = e.Domain.CheckpointAsync();
        await Task.Delay(100);       // the checkpoint waits in its sync of the segment
        Exception? bError = await Record.ExceptionAsync(() =>
            Write(e, Off + 8, 2, Segment.GrowCredit, (seg, tx) => seg.Grow(tx, 512 << 10)).WaitAsync(TimeSpan.FromSeconds(30)));
        await Record.ExceptionAsync(() => checkpoint.WaitAsync(TimeSpan.FromSeconds(30)));
        await e.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        hooks.Before = null;
        var (a, b) = await ReadAfterPowerCut(sim, CrashVariant.DropUnsynced);
        Assert.True(a == 1, "an acknowledged transaction is lost: a checkpoint was recorded over its lost placing");
        if (bError is null) Assert.Equal(2, b);
    }
}
