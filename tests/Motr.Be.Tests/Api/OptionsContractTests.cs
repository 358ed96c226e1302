using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;

namespace Motr.Be.Tests.Api;

/// <summary>Options the engine's threads cannot use are refused at open, naming the option; long intervals work.</summary>
public class OptionsContractTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData(0.0)]
    [InlineData(-1.0)]
    public void A_checkpoint_interval_that_is_not_positive_is_refused_at_open(double seconds)
    {
        var storage = new SimStorage();
        var o = Engines.Sim(storage);
        o.CheckpointInterval = TimeSpan.FromSeconds(seconds);
        // Before: the domain opened; the placer then waited with that interval on its own thread: a negative one threw
        // there (ending the process), zero spun while a checkpoint synced.
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => Domain.Open(o));
        Assert.Equal(nameof(DomainOptions.CheckpointInterval), ex.ParamName);
        Assert.Empty(storage.List()); // refused before anything was created
    }

    [Fact]
    public void A_checkpoint_fraction_that_is_not_a_number_is_refused_at_open()
    {
        var o = Engines.Sim(new SimStorage());
        o.CheckpointFraction = double.NaN;
        Assert.Equal(nameof(DomainOptions.CheckpointFraction), Assert.Throws<ArgumentOutOfRangeException>(() => Domain.Open(o)).ParamName);
    }

    [Fact]
    public async Task A_checkpoint_interval_longer_than_a_wait_accepts_works()
    {
        // 30 days is more than ManualResetEventSlim.Wait accepts (int.MaxValue ms). Before: the placer's first wait with
        // something placed and not yet checkpointed threw ArgumentOutOfRangeException on the placer's thread, which
        // ended the process. Now it waits at most that long and looks again.
        var hooks = new HookStorage(new SimStorage());
        var o = Engines.Sim(hooks.Inner, segments: 1);
        o.Storage = hooks;
        o.CheckpointInterval = TimeSpan.FromDays(30);
        o.CheckpointFraction = 0.9;
        int placed = 0;
        var second = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        hooks.Before = (f, op, _, _) =>
        {
            if (op == "write" && f.Name != BeConstants.LogFileName && Thread.CurrentThread.Name == "motr-placer" && Interlocked.Increment(ref placed) == 2)
                second.TrySetResult();
        };
        await using var e = await Engines.Open(o);
        var loc = e.Localities[0];
        for (int i = 1; i <= 2; i++)
        {
            // Each record is placed, and then (not due: little placed, interval not passed) the placer waits the interval.
            await loc.RunAsync(async () =>
            {
                using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                tx.Capture<long>(Engines.DataStart) = i;
                await tx.Close();
            }).WaitAsync(T);
        }
        // The second record's placing shows the placer came back from the wait that followed the first.
        await second.Task.WaitAsync(T);
        Assert.Null(e.Domain.Failure);
        await e.Domain.CheckpointAsync().WaitAsync(T);
    }

    [Fact]
    public async Task The_checkpoint_interval_is_taken_at_open_and_a_later_change_of_the_options_is_not_seen()
    {
        var o = Engines.Sim(new SimStorage(), segments: 1);
        await using var e = await Engines.Open(o);
        o.CheckpointInterval = TimeSpan.FromSeconds(-5); // the placer keeps the validated value
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
            tx.Capture<long>(Engines.DataStart) = 1;
            await tx.Close();
        }).WaitAsync(T);
        await e.Domain.CheckpointAsync().WaitAsync(T);
        Assert.Null(e.Domain.Failure);
    }
}
