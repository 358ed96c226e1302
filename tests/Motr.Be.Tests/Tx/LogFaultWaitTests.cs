using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Be.Tests.Tx;

/// <summary>
/// The log's fdatasync fails (the Linux way: the record's pages are dropped) while every kind of wait is pending: a
/// persistence awaited on the locality, one awaited off it (<see cref="TxPersistence.AsTask"/>) for a group still in the
/// writer's inbox, a begin waiting for log space, a checkpoint whose header sync queues behind the failing sync, and the
/// close itself. Every wait ends with the failure, the close ends, and a reopen holds exactly what was acknowledged.
/// </summary>
public class LogFaultWaitTests
{
    private const long Off = Engines.DataStart;
    private static readonly TimeSpan Hang = TimeSpan.FromSeconds(60);

    private sealed class Held : IDisposable
    {
        public readonly ManualResetEventSlim Blocked = new(), Release = new();
        public void Dispose() => Release.Set();
    }

    /// <summary>Arms <paramref name="hooks"/>: the log writer's next sync of the log blocks until released, then fails dropping the record.</summary>
    private static Held HoldLogSync(HookStorage hooks)
    {
        var held = new Held();
        int armed = 1;
        hooks.Before = (f, op, _, _) =>
        {
            if (f.Name != BeConstants.LogFileName || op != "flush" || Thread.CurrentThread.Name != "motr-log-writer") return;
            if (Interlocked.Exchange(ref armed, 0) == 0) return;
            held.Blocked.Set();
            held.Release.Wait(Hang);
            throw f.LoseUnsynced("fdatasync motr.log");
        };
        return held;
    }

    private static Task Commit(Locality loc, long offset, long value) => loc.RunAsync(async () =>
    {
        using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
        tx.Capture<long>(offset) = value;
        await tx.Close();
    });

    private static TxCredit Share(Engine e, double fraction) => TxCredit.Region((int)(e.Domain.Stats.LogAreaSize * fraction / 2));

    private static async Task AssertAcknowledgedOnly(SimStorage sim)
    {
        foreach (var image in new[] { sim.Clone(), sim.CrashImage(sim.OpCount, CrashVariant.DropUnsynced, 1), sim.CrashImage(sim.OpCount, CrashVariant.KeepUnsynced, 1) })
        {
            await using var e = await Engines.Open(Engines.Sim(image));
            var (s1, s2) = (e.Localities[0].Segment!, e.Localities[1].Segment!);
            Assert.Equal(1, s1.LastTxId);
            Assert.Equal(0, s2.LastTxId);
            Assert.Equal(1, await e.Localities[0].RunAsync(() => s1.At<long>(Off)));
            Assert.Equal(0, await e.Localities[0].RunAsync(() => s1.At<long>(Off + 8)));
            Assert.Equal(0, await e.Localities[1].RunAsync(() => s2.At<long>(Off)));
        }
    }

    [Fact]
    public async Task A_failing_log_sync_ends_every_pending_wait_with_the_failure_and_a_reopen_holds_only_what_was_acknowledged()
    {
        var sim = new SimStorage();
        var hooks = new HookStorage(sim);
        var o = Engines.Sim(sim);
        o.Storage = hooks;
        var e = await Engines.Open(o);
        var (l0, l1) = (e.Localities[0], e.Localities[1]);
        await Commit(l0, Off, 1).WaitAsync(Hang); // acknowledged: must survive
        using var held = HoldLogSync(hooks);
        var onLocality = Commit(l0, Off + 8, 2); // its record's sync is the one that fails
        Assert.True(held.Blocked.Wait(Hang));
        // A group sealed while the writer is stuck: it waits in the inbox, awaited off its locality.
        var offLocality = await l1.RunAsync<Task>(() =>
        {
            using var tx = l1.Segment!.TryBegin(TxCredit.Region(8), out var t) ? t : throw new InvalidOperationException("no log space");
            tx.Capture<long>(Off) = 3;
            var p = tx.Close();
            l1.Segment!.FlushAsync();
            return p.AsTask();
        }).WaitAsync(Hang);
        // Clean transactions hold most of the log, so the next begin waits for space.
        var hold = new TaskCompletionSource();
        var holding = new TaskCompletionSource();
        var holder = l1.RunAsync(async () =>
        {
            using var a = await l1.Segment!.BeginAsync(Share(e, 0.45));
            using var b = await l1.Segment!.BeginAsync(Share(e, 0.4));
            holding.SetResult();
            await hold.Task;
        });
        await holding.Task.WaitAsync(Hang);
        var forSpace = l0.RunAsync(async () =>
        {
            using var tx = await l0.Segment!.BeginAsync(Share(e, 0.3));
            tx.Capture<long>(Off + 16) = 4;
            await tx.Close();
        });
        await l0.RunAsync(() => { }).WaitAsync(Hang); // the begin is waiting
        Assert.True(e.Domain.LogSpace.HasWaiters);
        var checkpoint = e.Domain.CheckpointAsync(); // its sync of the log's header queues behind the failing one

        held.Release.Set();
        var failure = await Assert.ThrowsAsync<LogFailedException>(() => onLocality.WaitAsync(Hang));
        Assert.Contains(BeConstants.LogFileName, failure.Message);
        Assert.Contains("fdatasync", failure.ToString());
        await Assert.ThrowsAsync<LogFailedException>(() => offLocality.WaitAsync(Hang));
        await Assert.ThrowsAsync<LogFailedException>(() => forSpace.WaitAsync(Hang));
        await Assert.ThrowsAsync<LogFailedException>(() => checkpoint.WaitAsync(Hang));
        await Assert.ThrowsAsync<LogFailedException>(() => Commit(l1, Off + 8, 5).WaitAsync(Hang));
        hold.SetResult();
        await holder.WaitAsync(Hang);
        Assert.Equal(2, await l0.RunAsync(() => l0.Segment!.At<long>(Off + 8))); // what is in memory still reads
        await e.DisposeAsync().AsTask().WaitAsync(Hang);
        Assert.False(e.Domain.PlacerRunning);
        Assert.Equal(0, hooks.OpenFiles);
        hooks.Before = null;
        await AssertAcknowledgedOnly(sim);
    }

    [Fact]
    public async Task Closing_while_the_log_sync_is_stuck_ends_once_it_fails_with_every_wait_ended_and_every_file_closed()
    {
        var sim = new SimStorage();
        var hooks = new HookStorage(sim);
        var o = Engines.Sim(sim);
        o.Storage = hooks;
        var e = await Engines.Open(o);
        var l0 = e.Localities[0];
        await Commit(l0, Off, 1).WaitAsync(Hang);
        using var held = HoldLogSync(hooks);
        var pending = Commit(l0, Off + 8, 2);
        Assert.True(held.Blocked.Wait(Hang));
        var persisted = await e.Localities[1].RunAsync<Task>(() =>
        {
            using var tx = e.Localities[1].Segment!.TryBegin(TxCredit.Region(8), out var t) ? t : throw new InvalidOperationException("no log space");
            tx.Capture<long>(Off) = 3;
            return tx.Close().AsTask();
        }).WaitAsync(Hang);
        var close = e.DisposeAsync().AsTask();
        held.Release.Set();
        await close.WaitAsync(Hang);
        // The locality's run is abandoned by the close; the persistence awaited off the locality hears the failure.
        await Assert.ThrowsAnyAsync<Exception>(() => pending.WaitAsync(Hang));
        await Assert.ThrowsAsync<LogFailedException>(() => persisted.WaitAsync(Hang));
        Assert.NotNull(e.Domain.Failure);
        Assert.False(e.Domain.PlacerRunning);
        Assert.Equal(0, hooks.OpenFiles);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => e.Domain.CheckpointAsync().WaitAsync(Hang));
        hooks.Before = null;
        await AssertAcknowledgedOnly(sim);
    }

    /// <summary>
    /// A segment file's write (placing) or sync (a checkpoint) stuck while the engine closes, then failing: the close
    /// ends, no placer thread is left, every file is closed, the domain names the file, and since the log was never
    /// released past what the files hold, a reopen has every acknowledged transaction.
    /// </summary>
    [Theory]
    [InlineData("write", "motr-placer", "placing failed")]
    [InlineData("flush", "motr-checkpoint", "checkpoint failed")]
    public async Task Closing_while_a_segment_write_or_sync_is_stuck_ends_once_it_fails_and_loses_nothing_acknowledged(string op, string thread, string failed)
    {
        var sim = new SimStorage();
        var hooks = new HookStorage(sim);
        var o = Engines.Sim(sim);
        o.Storage = hooks;
        var e = await Engines.Open(o);
        var l0 = e.Localities[0];
        await Commit(l0, Off, 1).WaitAsync(Hang);
        await e.Domain.CheckpointAsync().WaitAsync(Hang);
        var held = new Held();
        int armed = 1;
        string seg1 = BeConstants.SegmentFileName(1);
        hooks.Before = (f, what, _, _) =>
        {
            if (f.Name != seg1 || what != op || Thread.CurrentThread.Name != thread) return;
            if (Interlocked.Exchange(ref armed, 0) == 0) return;
            held.Blocked.Set();
            held.Release.Wait(Hang);
            throw f.LoseUnsynced(op + " " + seg1);
        };
        await Commit(l0, Off + 8, 2).WaitAsync(Hang); // acknowledged: the log is fine
        Task checkpoint = Task.CompletedTask;
        if (op == "flush") checkpoint = e.Domain.CheckpointAsync();
        Assert.True(held.Blocked.Wait(Hang));
        var close = e.DisposeAsync().AsTask();
        held.Release.Set();
        await close.WaitAsync(Hang);
        if (op == "flush") await Assert.ThrowsAsync<LogFailedException>(() => checkpoint.WaitAsync(Hang));
        var failure = Assert.IsType<LogFailedException>(e.Domain.Failure);
        Assert.Contains(failed, failure.Message);
        Assert.Contains(seg1, failure.Message);
        Assert.False(e.Domain.PlacerRunning);
        Assert.Equal(0, hooks.OpenFiles);
        hooks.Before = null;
        foreach (var image in new[] { sim.Clone(), sim.CrashImage(sim.OpCount, CrashVariant.DropUnsynced, 1) })
        {
            await using var r = await Engines.Open(Engines.Sim(image));
            var s1 = r.Localities[0].Segment!;
            Assert.Equal(2, s1.LastTxId);
            Assert.Equal(2, await r.Localities[0].RunAsync(() => s1.At<long>(Off + 8)));
        }
    }
}
