using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Be.Tests.Tx;

/// <summary>Begins that wait for log space: cancellation, two localities, closing under waiters, starvation.</summary>
public class LogSpaceWaitTests
{
    private const long Off = Engines.DataStart;
    private static readonly TimeSpan Hang = TimeSpan.FromSeconds(60);

    private static async Task<Engine> Small(TempDir dir)
    {
        var o = Engines.Options(dir.Path, logSize: 1 << 20);
        o.CheckpointInterval = TimeSpan.FromHours(1); // only space pressure triggers checkpoints
        return await Engines.Open(o);
    }

    /// <summary>A credit whose reservation is about <paramref name="fraction"/> of the log's area.</summary>
    private static TxCredit Share(Engine e, double fraction) => TxCredit.Region((int)(e.Domain.Stats.LogAreaSize * fraction / 2));

    /// <summary>Everything done: no waiter, nothing used after a checkpoint, at most a chunk kept per locality, and a large tx still opens.</summary>
    private static async Task AssertIdle(Engine e)
    {
        foreach (var loc in e.Localities) await loc.RunAsync(async () => await loc.Segment!.FlushAsync()).WaitAsync(Hang);
        await e.Domain.CheckpointAsync().WaitAsync(Hang);
        Assert.False(e.Domain.LogSpace.HasWaiters);
        Assert.Equal(0, e.Domain.Stats.LogUsed);
        Assert.InRange(e.Domain.Stats.LogReserved, 0, e.Localities.Count * e.Domain.SpaceChunk);
        foreach (var loc in e.Localities)
            await loc.RunAsync(async () =>
            {
                using var tx = await loc.Segment!.BeginAsync(Share(e, 0.45));
                tx.Capture<long>(Off) = 1;
                await tx.Close();
            }).WaitAsync(Hang);
    }

    /// <summary>One transaction of <paramref name="credit"/> on <paramref name="loc"/> writing <paramref name="value"/> at <paramref name="at"/>, awaited durable.</summary>
    private static Task CommitOn(Locality loc, TxCredit credit, long at, long value) => loc.RunAsync(async () =>
    {
        using var tx = await loc.Segment!.BeginAsync(credit);
        tx.Capture<long>(at) = value;
        await tx.Close();
    }).WaitAsync(Hang);

    /// <summary>Two clean open transactions on locality 0 hold 90% of the log until <paramref name="hold"/> completes; returns (their run) once they hold it.</summary>
    private static async Task<Task> HoldMostOfTheLog(Engine e, Task hold)
    {
        var held = new TaskCompletionSource();
        var holder = e.Localities[0].RunAsync(async () =>
        {
            // Clean open transactions may stay open across awaits: they hold their reservations.
            using var a = await e.Localities[0].Segment!.BeginAsync(Share(e, 0.45));
            using var b = await e.Localities[0].Segment!.BeginAsync(Share(e, 0.45));
            held.SetResult();
            await hold;
        });
        await held.Task.WaitAsync(Hang);
        return holder;
    }

    [Fact]
    public async Task A_storm_of_cancelled_waiters_on_two_localities_leaks_nothing()
    {
        using var dir = new TempDir();
        await using var e = await Small(dir);
        var credit = Share(e, 0.2);
        for (int round = 0; round < 5; round++)
        {
            // A clean transaction pair holds most of the log, so every begin below waits.
            var hold = new TaskCompletionSource();
            var holder = await HoldMostOfTheLog(e, hold.Task);
            var sources = Enumerable.Range(0, 8).Select(_ => new CancellationTokenSource()).ToArray();
            var tasks = new List<Task<bool>>();
            for (int i = 0; i < 400; i++)
            {
                var loc = e.Localities[i % 2];
                var ct = sources[i % sources.Length].Token;
                int w = i;
                tasks.Add(loc.RunAsync(async () =>
                {
                    try
                    {
                        using var tx = await loc.Segment!.BeginAsync(credit, ct);
                        tx.Capture<long>(Off + 8 * (w % 64)) = w;
                        await tx.Close();
                        return true;
                    }
                    catch (OperationCanceledException) { return false; }
                }));
            }
            foreach (var loc in e.Localities) await loc.RunAsync(() => { }).WaitAsync(Hang); // every begin is waiting
            Assert.True(e.Domain.LogSpace.HasWaiters);
            // Six sources cancelled from as many threads at once, while the holder frees its space; two never cancelled.
            var go = new ManualResetEventSlim();
            var storm = Enumerable.Range(0, 6).Select(k => Task.Run(() => { go.Wait(); sources[k].Cancel(); }))
                .Append(Task.Run(() => { go.Wait(); hold.SetResult(); })).ToArray();
            go.Set();
            await Task.WhenAll(storm).WaitAsync(Hang);
            await holder.WaitAsync(Hang);
            var results = await Task.WhenAll(tasks).WaitAsync(Hang);
            for (int i = 0; i < results.Length; i++)
                if (i % sources.Length >= 6) Assert.True(results[i], $"begin {i} was never cancelled, yet did not run");
            Assert.Contains(false, results);
            await AssertIdle(e);
        }
    }

    [Fact]
    public async Task Closing_the_engine_under_hundreds_of_waiters_ends_every_wait()
    {
        using var dir = new TempDir();
        var e = await Small(dir);
        var hold = new TaskCompletionSource();
        var holder = await HoldMostOfTheLog(e, hold.Task);
        var waiters = new List<Task>();
        for (int i = 0; i < 300; i++)
        {
            var loc = e.Localities[i % 2];
            waiters.Add(loc.RunAsync(async () =>
            {
                using var tx = await loc.Segment!.BeginAsync(Share(e, 0.25));
                tx.Capture<long>(Off) = 1;
                await tx.Close();
            }));
        }
        await e.Localities[1].RunAsync(() => { }).WaitAsync(Hang); // the waiters have begun
        Assert.True(e.Domain.LogSpace.HasWaiters);
        await e.DisposeAsync().AsTask().WaitAsync(Hang);
        foreach (var t in waiters.Append(holder))
            await Assert.ThrowsAsync<ObjectDisposedException>(() => t.WaitAsync(Hang));
    }

    /// <summary>
    /// A locality that aborts a large transaction keeps its reservation locally. If it stays busy (its queue never runs
    /// empty, so it never goes idle) with transactions that abort or change nothing, a waiter on the other locality must
    /// still get the space: begins wait in arrival order, and a busy locality must not starve them.
    /// </summary>
    [Fact]
    public async Task A_waiter_is_not_starved_by_a_busy_locality_holding_aborted_reservations()
    {
        using var dir = new TempDir();
        await using var e = await Small(dir);
        var busy = e.Localities[0];
        var stop = false;
        var streaming = new TaskCompletionSource();
        long iterations = 0;
        var stream = busy.RunAsync(async () =>
        {
            var seg = busy.Segment!;
            using (var a = await seg.BeginAsync(Share(e, 0.4)))
            using (var b = await seg.BeginAsync(Share(e, 0.4)))
            {
                a.Capture<long>(Off) = 1;
                b.Capture<long>(Off + 8) = 2;
                a.Abort();
                b.Abort();
            }
            streaming.SetResult();
            while (!Volatile.Read(ref stop))
            {
                // Look-ups that change nothing, or give up: the space comes back to this locality.
                using (var tx = await seg.BeginAsync(TxCredit.Region(64))) { }
                iterations++;
                await Task.Yield();
            }
        });
        try
        {
            await streaming.Task.WaitAsync(Hang);
            await CommitOn(e.Localities[1], Share(e, 0.4), Off + 64, 3);
        }
        finally
        {
            Volatile.Write(ref stop, true);
        }
        await stream.WaitAsync(Hang);
        await AssertIdle(e);
    }

    /// <summary>A large begin behind a stream of small ones on another locality runs (arrival order), then the small ones go on.</summary>
    [Fact]
    public async Task A_large_waiter_behind_a_stream_of_small_closing_txs_runs()
    {
        using var dir = new TempDir();
        await using var e = await Small(dir);
        var busy = e.Localities[0];
        var stop = false;
        var stream = busy.RunAsync(async () =>
        {
            var seg = busy.Segment!;
            async Task Writer(int w)
            {
                for (int i = 0; !Volatile.Read(ref stop); i++)
                {
                    using var tx = await seg.BeginAsync(Share(e, 0.05));
                    tx.Capture<long>(Off + 8 * w) = i;
                    await tx.Close();
                }
            }
            await Task.WhenAll(Enumerable.Range(0, 16).Select(Writer));
        });
        try
        {
            for (int k = 0; k < 5; k++) await CommitOn(e.Localities[1], Share(e, 0.48), Off + 256, k);
        }
        finally
        {
            Volatile.Write(ref stop, true);
        }
        await stream.WaitAsync(Hang);
        await AssertIdle(e);
    }

    /// <summary>
    /// Each idle locality keeps one chunk of log space for its next begin, and a locality asleep is not woken when a begin
    /// elsewhere starts waiting. With many segments on a small log, chunks of a fixed minimum size added up to nearly the
    /// whole area: once every locality had aborted one small transaction, a begin of a few KiB on one of them waited
    /// forever, with the log empty. What idle localities keep together must leave room for the largest transaction.
    /// </summary>
    [Fact]
    public async Task A_begin_on_a_small_log_is_not_starved_by_the_chunks_idle_localities_keep()
    {
        var o = Engines.Sim(new Motr.Be.Storage.SimStorage(), segments: 16, logSize: (64 << 10) + 4096);
        await using var e = await Engines.Open(o);
        foreach (var loc in e.Localities)
            await loc.RunAsync(async () =>
            {
                using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                tx.Capture<long>(Off) = 1;
                tx.Abort();
            }).WaitAsync(Hang);
        foreach (var loc in e.Localities) await loc.RunAsync(() => { }).WaitAsync(Hang); // each has gone idle once
        Assert.Equal(0, e.Domain.Stats.LogUsed);
        // The largest transaction a record may hold, on one locality while the others sleep.
        long most = e.Domain.MaxTxReservation / 2 - Motr.Be.Log.LogFormat.TxOverhead - 64;
        await CommitOn(e.Localities[0], TxCredit.Region((int)most), Off, 2);
        await CommitOn(e.Localities[15], TxCredit.Region((int)most), Off, 3);
    }

    /// <summary>
    /// A begin waiting for space with a caller's long-lived token (a host's stopping token, say) registers on it. When the
    /// domain fails, or closes, under the wait, that registration must go: it holds the waiter, the log space, and through
    /// it the whole closed domain, for as long as the token lives.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_domain_failed_or_closed_under_a_waiting_begin_is_not_kept_alive_by_the_begins_token(bool fail)
    {
        using var cts = new CancellationTokenSource();
        var domain = await WaitThenEnd(cts.Token, fail);
        for (int i = 0; i < 10 && domain.IsAlive; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        Assert.False(domain.IsAlive, "the closed domain is still reachable: from the token of a begin that waited in it");
        GC.KeepAlive(cts);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static async Task<WeakReference> WaitThenEnd(CancellationToken token, bool fail)
    {
        var sim = new Motr.Be.Storage.SimStorage();
        var e = await Engines.Open(Engines.Sim(sim));
        await CommitOn(e.Localities[0], TxCredit.Region(8), Off, 1); // placed, not yet checkpointed
        var hold = new TaskCompletionSource();
        var holder = await HoldMostOfTheLog(e, hold.Task);
        if (fail) sim.FailAfter(0, Motr.Be.Storage.SimFault.Flush); // the checkpoint the wait asks for fails
        var waiter = e.Localities[1].RunAsync(async () =>
        {
            using var tx = await e.Localities[1].Segment!.BeginAsync(Share(e, 0.3), token);
        });
        if (fail)
        {
            await Assert.ThrowsAsync<LogFailedException>(() => waiter.WaitAsync(Hang));
        }
        else
        {
            await e.Localities[1].RunAsync(() => { }).WaitAsync(Hang);
            Assert.True(e.Domain.LogSpace.HasWaiters);
        }
        await e.DisposeAsync().AsTask().WaitAsync(Hang); // the holder still holds: a waiter of the close case still waits
        hold.SetResult();
        await Record.ExceptionAsync(() => waiter.WaitAsync(Hang));
        await Record.ExceptionAsync(() => holder.WaitAsync(Hang));
        return new WeakReference(e.Domain);
    }
}
