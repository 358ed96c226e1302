using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Be.Tests.Integration;

/// <summary>An engine's folder is its own while it is open, and closing it fails what cannot finish instead of leaving it hanging.</summary>
public class EngineLifecycleTests
{
    [Fact]
    public async Task A_second_engine_on_an_open_folder_is_refused_and_the_first_loses_nothing()
    {
        using var dir = new TempDir();
        var o = Engines.Options(dir.Path, segments: 1);
        await using (var first = await Engines.Open(o))
        {
            var loc = first.Localities[0];
            // Before, the second open succeeded; each engine replayed and wrote the same log, and after both
            // closed the first one's acknowledged transactions were gone.
            var ex = await Assert.ThrowsAsync<BeException>(() => Engines.Open(Engines.Options(dir.Path, segments: 1)));
            Assert.Contains(dir.Path, ex.Message);
            Assert.Contains("in use by another engine", ex.Message);
            await loc.RunAsync(async () =>
            {
                using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                tx.Capture<long>(Engines.DataStart) = 4242;
                await tx.Close();
            });
        }
        await using (var again = await Engines.Open(o))
        {
            var loc = again.Localities[0];
            Assert.Equal(4242, await loc.RunAsync(() => loc.Segment!.At<long>(Engines.DataStart)));
        }
    }

    [Fact]
    public async Task A_second_engine_on_open_sim_storage_is_refused()
    {
        var s = new SimStorage();
        await using var first = await Engines.Open(Engines.Sim(s));
        var ex = await Assert.ThrowsAsync<BeException>(() => Engines.Open(Engines.Sim(s)));
        Assert.Contains("in use by another engine", ex.Message);
        // A crash image is another disk: it opens.
        await using var image = await Engines.Open(Engines.Sim(s.Clone()));
    }

    [Fact]
    public async Task Work_on_a_closed_engine_fails_instead_of_hanging()
    {
        using var dir = new TempDir();
        var e = await Engines.Open(Engines.Options(dir.Path, segments: 1));
        var loc = e.Localities[0];
        var started = new TaskCompletionSource();
        // A workload that keeps awaiting persistence on the locality while the engine closes.
        var work = loc.RunAsync(async () =>
        {
            for (long i = 0; ; i++)
            {
                using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                tx.Capture<long>(Engines.DataStart) = i;
                started.TrySetResult();
                await tx.Close();
            }
        });
        await started.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await e.DisposeAsync();
        // Before, both stayed WaitingForActivation forever: the stopped locality dropped their continuations.
        var ex = await Assert.ThrowsAsync<ObjectDisposedException>(() => work.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains("is stopped", ex.Message);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => loc.RunAsync(() => 42).WaitAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task A_persistence_task_awaited_off_the_locality_completes_when_the_engine_closes()
    {
        // A helper's probe: the transaction closes in the locality's last turns, the locality stops, and AsTask is
        // taken after. Its completion was posted to the stopped locality and dropped: the task never completed.
        var hooks = new HookStorage(new SimStorage());
        var o = Engines.Sim(hooks.Inner, segments: 1);
        o.Storage = hooks;
        var e = await Engines.Open(o);
        var loc = e.Localities[0];
        var gate = new ManualResetEventSlim();
        hooks.Before = (f, op, _, _) =>
        {
            if (op == "flush" && f.Name == BeConstants.LogFileName && Thread.CurrentThread.Name == "motr-log-writer") gate.Wait(10_000);
        };
        var persistence = await loc.RunAsync(async () =>
        {
            using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
            tx.Capture<long>(Engines.DataStart) = 42;
            return tx.Close();
        });
        await loc.DisposeAsync();                       // the locality stops; the group is still in the writer's sync
        Assert.False(persistence.IsCompleted);
        var task = persistence.AsTask();
        gate.Set();
        await task.WaitAsync(TimeSpan.FromSeconds(30)); // durable once the sync returns
        Assert.True(persistence.IsCompleted);
        // The engine's own close then finds its locality already stopped: its flush fails, and it closes anyway.
        await Assert.ThrowsAsync<ObjectDisposedException>(() => e.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task A_large_transactions_unused_log_space_is_not_kept_by_an_idle_locality()
    {
        // A helper's probe: an aborted large transaction's reservation went back to its locality's local space and
        // stayed there while it idled; a transaction on the other locality waiting for that space waited forever.
        var s = new SimStorage();
        await using var e = await Engines.Open(Engines.Sim(s, segments: 2, logSize: 2 << 20));
        var (loc0, loc1) = (e.Localities[0], e.Localities[1]);
        var big = new TxCredit(1, e.Domain.MaxTxReservation / 2 - 8192);
        await loc0.RunAsync(async () =>
        {
            using var tx = await loc0.Segment!.BeginAsync(big); // aborted unused at dispose
        });
        var waiting = loc1.RunAsync(async () =>
        {
            using var small = await loc1.Segment!.BeginAsync(TxCredit.Region(64 << 10)); // open, nothing captured
            using var large = await loc1.Segment!.BeginAsync(big);
        });
        await waiting.WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task Send_to_a_stopped_locality_fails_instead_of_waiting_forever()
    {
        using var dir = new TempDir();
        var e = await Engines.Open(Engines.Options(dir.Path, segments: 1));
        var loc = e.Localities[0];
        var context = await loc.RunAsync(() => SynchronizationContext.Current!);
        int ran = 0;
        context.Send(_ => ran++, null);
        Assert.Equal(1, ran);
        await e.DisposeAsync();
        Assert.True(loc.HasStopped);
        var send = Task.Run(() => context.Send(_ => ran++, null));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => send.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(1, ran);
    }
    /// <summary>
    /// Runs still awaiting when the engine closes fail; a caller that dropped such a task (as an outer run does when
    /// its continuation is dropped by the stopped locality) must not get an unobserved fault reported for it.
    /// </summary>
    [Fact]
    public async Task An_abandoned_run_leaves_no_unobserved_exception()
    {
        var seen = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        EventHandler<UnobservedTaskExceptionEventArgs> watch = (_, a) =>
        {
            foreach (var x in a.Exception.InnerExceptions)
                if (x is ObjectDisposedException && x.Message.Contains("is stopped (its engine was closed)")) seen.Enqueue(x);
        };
        TaskScheduler.UnobservedTaskException += watch;
        try
        {
            using var dir = new TempDir();
            var e = await Engines.Open(Engines.Options(dir.Path, segments: 1));
            await StartNestedRunsAndDropThem(e.Localities[0]);
            await e.DisposeAsync();
            for (int i = 0; i < 3; i++)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
            }
            Assert.Empty(seen);
        }
        finally
        {
            TaskScheduler.UnobservedTaskException -= watch;
        }
    }

    // Not inlined, so no reference to the dropped tasks stays in the test's frame.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static async Task StartNestedRunsAndDropThem(Locality loc)
    {
        var started = new TaskCompletionSource();
        _ = loc.RunAsync(async () =>
        {
            await loc.RunAsync(async () =>
            {
                started.TrySetResult();
                await new TaskCompletionSource().Task; // never completes
            });
        });
        await started.Task.WaitAsync(TimeSpan.FromSeconds(30));
    }

    /// <summary>
    /// A locality kept busy by work that never closes a transaction (it yields and aborts in a loop) never runs its
    /// queue empty; a transaction closed on it meanwhile must still become durable. Before, with the log writer
    /// already idle, nothing asked for the seal and the wait never ended (a load beside such work hung).
    /// </summary>
    [Fact]
    public async Task A_closed_transaction_becomes_durable_while_its_locality_stays_busy()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Engines.Options(dir.Path, segments: 1));
        var loc = e.Localities[0];
        bool stop = false;
        var churn = loc.RunAsync(async () =>
        {
            while (!Volatile.Read(ref stop))
            {
                using (var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8)))
                {
                    tx.Capture<long>(Engines.DataStart + 8) = 1;
                    tx.Abort();
                }
                await Task.Yield();
            }
        });
        try
        {
            for (int i = 0; i < 20; i++)
            {
                await loc.RunAsync(async () =>
                {
                    using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                    tx.Capture<long>(Engines.DataStart) = i;
                    await tx.Close().AsTask().WaitAsync(TimeSpan.FromSeconds(60));
                });
            }
        }
        finally
        {
            Volatile.Write(ref stop, true);
        }
        await churn.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(19, await loc.RunAsync(() => loc.Segment!.At<long>(Engines.DataStart)));
    }

    [Fact]
    public async Task An_engine_whose_locality_fails_to_start_releases_the_domain_and_the_folder_opens_again()
    {
        using var dir = new TempDir();
        var o = Engines.Options(dir.Path, segments: 2);
        var made = new List<Locality>();
        // The second locality fails as it is made (a thread that cannot start, say): the first is made and attached.
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => Engine.OpenAsync(o, (i, onFault) =>
        {
            if (i == 1) throw new InvalidOperationException("no locality 1");
            var l = new Locality(i, onFault);
            made.Add(l);
            return l;
        }, CancellationToken.None));
        Assert.Equal("no locality 1", ex.Message);
        // Before, the opened domain was left behind: its threads ran, its files and the folder's lock were held, and
        // the folder could not be opened again in this process ("in use by another engine").
        await using (var again = await Engines.Open(o)) Assert.Equal(2, again.Localities.Count);
        Assert.True(Assert.Single(made).HasStopped);
    }

    [Fact]
    public async Task A_domain_whose_log_writer_fails_to_start_stops_the_placer_it_started()
    {
        using var dir = new TempDir();
        var o = Engines.Options(dir.Path, segments: 2);
        Domain? opening = null;
        // The writer's start fails (a thread that cannot start, say) after the placer's threads started.
        o.LogWriterStarting = d => { opening = d; throw new InvalidOperationException("no log writer"); };
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => Domain.OpenAsync(o));
        Assert.Equal("no log writer", ex.Message);
        // Before, the open's cleanup closed the placer's files but left its threads running (placing into closed files
        // should anything reach them) for the life of the process.
        Assert.False(opening!.PlacerRunning);
        o.LogWriterStarting = null;
        await using (var again = await Engines.Open(o)) Assert.Equal(2, again.Localities.Count);
    }
}
