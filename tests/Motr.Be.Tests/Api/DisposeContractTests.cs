using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Be.Tests.Api;

/// <summary>DisposeAsync called twice at once: the second call returns only once the close has finished.</summary>
public class DisposeContractTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_second_engine_dispose_during_the_first_returns_only_once_the_engine_is_closed()
    {
        using var dir = new TempDir();
        var e = await Engines.Open(Engines.Options(dir.Path));
        var loc = e.Localities[0];
        // Hold locality 0 so that the first close waits for its flush.
        using var gate = new ManualResetEventSlim();
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = loc.RunAsync(() => { entered.SetResult(); gate.Wait(); });
        await entered.Task.WaitAsync(T);
        var first = e.DisposeAsync().AsTask();
        var second = e.DisposeAsync().AsTask();
        // Before: the second call returned at once, with the files open and the folder still locked (a reopen by its
        // caller failed on the lock).
        Assert.False(second.IsCompleted);
        gate.Set();
        await held.WaitAsync(T);
        await second.WaitAsync(T);
        Assert.True(first.IsCompleted);
        await first;
        await using var again = await Engines.Open(Engines.Options(dir.Path)); // the folder's lock was released
        await e.DisposeAsync(); // a call after the close: returns at once
    }

    // A turn that closed its own engine and waited for the close hung for ever: the close waits for that locality to
    // flush and stop. (A turn that awaited it instead was abandoned by the stopping locality, its caller told only
    // that the locality had stopped.) The call is now refused at once, and the engine stays open.
    [Fact]
    public async Task An_engine_dispose_called_in_one_of_its_turns_is_refused_at_once_and_the_engine_stays_open()
    {
        using var dir = new TempDir();
        var e = await Engines.Open(Engines.Options(dir.Path));
        var loc = e.Localities[1];
        var refused = await loc.RunAsync(() =>
        {
            var closing = e.DisposeAsync();
            Assert.True(closing.IsCompleted, "the close started inside the turn"); // before: a task a blocking caller waited on for ever
            return closing.AsTask().Exception!.InnerException!;
        }).WaitAsync(T);
        var error = Assert.IsType<InvalidOperationException>(refused);
        Assert.Equal($"{e.Domain.Location}: Engine.DisposeAsync called in a turn on locality 1: closing waits for every locality " +
            "to flush and stop, this one too; close the engine from outside its localities", error.Message);
        // Still open: both localities take transactions.
        foreach (var l in e.Localities)
            await l.RunAsync(async () =>
            {
                using var tx = await l.Segment!.BeginAsync(TxCredit.Region(8));
                tx.Capture<long>(Engines.DataStart) = 9;
                await tx.Close();
            }).WaitAsync(T);
        await e.DisposeAsync().AsTask().WaitAsync(T);
        await using var again = await Engines.Open(Engines.Options(dir.Path)); // closed: the folder's lock was released
    }

    [Fact]
    public async Task A_second_domain_dispose_during_the_first_returns_only_once_the_domain_is_closed()
    {
        var hooks = new HookStorage(new SimStorage());
        var o = Engines.Sim(hooks.Inner, segments: 1);
        o.Storage = hooks;
        var d = Domain.Open(o);
        // A transaction closed and not yet written, so that the close has a group to write.
        var loc = new Locality(0);
        loc.Attach(d.Segments[0]);
        await loc.RunAsync(async () =>
        {
            using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
            tx.Capture<long>(Engines.DataStart) = 7;
            _ = tx.Close();
        }).WaitAsync(T);
        await loc.DisposeAsync();
        using var gate = new ManualResetEventSlim();
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        hooks.Before = (_, _, _, _) =>
        {
            if (Thread.CurrentThread.Name is not ("motr-log-writer" or "motr-placer")) return;
            entered.TrySetResult();
            gate.Wait(T); // the last group's write, held
        };
        var first = d.DisposeAsync().AsTask();
        await entered.Task.WaitAsync(T);
        var second = d.DisposeAsync().AsTask();
        Assert.False(second.IsCompleted);
        gate.Set();
        await second.WaitAsync(T);
        Assert.True(first.IsCompleted);
        await first;
        hooks.Before = null;
        await (await Domain.OpenAsync(o)).DisposeAsync(); // the folder's lock was released
    }
}
