using Motr.Runtime;

namespace Motr.Be.Tests.Integration;

/// <summary>Every RunAsync form completes once, with its operation's outcome, on every path; the locality survives.</summary>
public class LocalityRunTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);

    private sealed class Boom() : Exception("boom");

    [Fact]
    public async Task Synchronous_throws_fault_every_form_and_the_locality_keeps_running()
    {
        await using var loc = new Locality(0);
        await Assert.ThrowsAsync<Boom>(() => loc.RunAsync((Action)(() => throw new Boom())).WaitAsync(T));
        await Assert.ThrowsAsync<Boom>(() => loc.RunAsync((Func<int>)(() => throw new Boom())).WaitAsync(T));
        await Assert.ThrowsAsync<Boom>(() => loc.RunAsync((Func<Task>)(() => throw new Boom())).WaitAsync(T));
        await Assert.ThrowsAsync<Boom>(() => loc.RunAsync((Func<Task<int>>)(() => throw new Boom())).WaitAsync(T));
        // An OperationCanceledException thrown synchronously faults (as before): only a cancelled task cancels.
        var t = loc.RunAsync((Action)(() => throw new OperationCanceledException()));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => t.WaitAsync(T));
        Assert.True(t.IsFaulted);
        Assert.Equal(0, loc.Faults);
        Assert.Equal(7, await loc.RunAsync(() => 7).WaitAsync(T));
    }

    [Fact]
    public async Task Returned_tasks_faulted_cancelled_or_complete_pass_on_their_outcome()
    {
        await using var loc = new Locality(0);
        await Assert.ThrowsAsync<Boom>(() => loc.RunAsync(() => Task.FromException(new Boom())).WaitAsync(T));
        await Assert.ThrowsAsync<Boom>(() => loc.RunAsync(() => Task.FromException<int>(new Boom())).WaitAsync(T));
        var c = loc.RunAsync(() => Task.FromCanceled(new CancellationToken(true)));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => c.WaitAsync(T));
        Assert.True(c.IsCanceled);
        var c1 = loc.RunAsync(() => Task.FromCanceled<int>(new CancellationToken(true)));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => c1.WaitAsync(T));
        Assert.True(c1.IsCanceled);
        await loc.RunAsync(() => Task.CompletedTask).WaitAsync(T);
        Assert.Equal(5, await loc.RunAsync(() => Task.FromResult(5)).WaitAsync(T));
        // Several exceptions of one faulted task all reach the run's task.
        var both = Task.WhenAll(Task.FromException(new Boom()), Task.FromException(new InvalidOperationException()));
        var m = loc.RunAsync(() => both);
        await Assert.ThrowsAnyAsync<Exception>(() => m.WaitAsync(T));
        Assert.Equal(2, m.Exception!.InnerExceptions.Count);
    }

    [Fact]
    public async Task Awaiting_operations_resume_on_the_locality_and_pass_on_throws_and_cancellations()
    {
        await using var loc = new Locality(0);
        await Assert.ThrowsAsync<Boom>(() => loc.RunAsync(async () =>
        {
            await Task.Yield();
            Assert.True(loc.IsOwnerThread);
            throw new Boom();
        }).WaitAsync(T));
        await Assert.ThrowsAsync<Boom>(() => loc.RunAsync<int>(async () =>
        {
            await Task.Delay(1);
            Assert.True(loc.IsOwnerThread);
            throw new Boom();
        }).WaitAsync(T));
        var c = loc.RunAsync(async () =>
        {
            await Task.Delay(1);
            throw new OperationCanceledException();
        });
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => c.WaitAsync(T));
        Assert.True(c.IsCanceled);
        Assert.Equal(9, await loc.RunAsync(async () => { await Task.Delay(1); return loc.IsOwnerThread ? 9 : -1; }).WaitAsync(T));
        Assert.Equal(0, loc.Faults);
    }

    [Fact]
    public async Task An_operation_completed_by_another_thread_completes_its_run_once()
    {
        await using var loc = new Locality(0);
        for (int i = 0; i < 2000; i++)
        {
            var tcs = new TaskCompletionSource<int>();
            var run = loc.RunAsync(() => tcs.Task);
            var set = Task.Run(() => tcs.SetResult(i));
            Assert.Equal(i, await run.WaitAsync(T));
            await set;
        }
    }

    [Fact]
    public async Task Nested_and_cross_locality_runs_complete_and_resume_where_they_started()
    {
        await using var a = new Locality(0);
        await using var b = new Locality(1);
        int r = await a.RunAsync(async () =>
        {
            int inner = await a.RunAsync(() => 1);
            Assert.True(a.IsOwnerThread);
            inner += await b.RunAsync(async () => { await Task.Yield(); Assert.True(b.IsOwnerThread); return 2; });
            Assert.True(a.IsOwnerThread);
            await b.RunAsync(() => Assert.True(b.IsOwnerThread));
            Assert.True(a.IsOwnerThread);
            try { await b.RunAsync((Action)(() => throw new Boom())); }
            catch (Boom) { inner += 4; }
            Assert.True(a.IsOwnerThread);
            return inner;
        }).WaitAsync(T);
        Assert.Equal(7, r);
        Assert.Equal(0, a.Faults + b.Faults);
    }

    [Fact]
    public async Task Every_form_fails_with_ObjectDisposedException_on_a_stopped_locality()
    {
        var loc = new Locality(0);
        await loc.DisposeAsync();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => loc.RunAsync(() => { }).WaitAsync(T));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => loc.RunAsync(() => 1).WaitAsync(T));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => loc.RunAsync(() => Task.CompletedTask).WaitAsync(T));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => loc.RunAsync(() => Task.FromResult(1)).WaitAsync(T));
    }

    [Fact]
    public async Task Runs_awaiting_when_the_locality_stops_fail_with_ObjectDisposedException()
    {
        var loc = new Locality(0);
        var never = new TaskCompletionSource();
        var never1 = new TaskCompletionSource<int>();
        var r0 = loc.RunAsync(async () => { await Task.Yield(); await never.Task; });
        var r1 = loc.RunAsync(async () => { await Task.Yield(); return await never1.Task; });
        var r2 = loc.RunAsync(() => never.Task);
        var r3 = loc.RunAsync(() => never1.Task);
        await loc.RunAsync(() => { }).WaitAsync(T);
        await loc.DisposeAsync();
        foreach (var t in new Task[] { r0, r1, r2, r3 })
            await Assert.ThrowsAsync<ObjectDisposedException>(() => t.WaitAsync(T));
        // Completing the operations afterwards changes nothing and throws nothing.
        never.SetResult();
        never1.SetResult(3);
        Assert.True(r2.IsFaulted && r3.IsFaulted);
    }

    [Fact]
    public async Task Runs_started_while_the_locality_stops_complete_or_fail_never_hang()
    {
        for (int round = 0; round < 200; round++)
        {
            var loc = new Locality(0);
            var runs = new List<Task>();
            var go = new ManualResetEventSlim();
            var starter = Task.Run(() =>
            {
                go.Wait();
                for (int i = 0; i < 50; i++)
                {
                    runs.Add(loc.RunAsync(() => { }));
                    runs.Add(loc.RunAsync(() => i));
                    runs.Add(loc.RunAsync(async () => { await Task.Yield(); }));
                    runs.Add(loc.RunAsync(async () => { await Task.Yield(); return 1; }));
                }
            });
            go.Set();
            await loc.DisposeAsync();
            await starter.WaitAsync(T);
            foreach (var t in runs)
            {
                try { await t.WaitAsync(T); }
                catch (ObjectDisposedException) { }
            }
        }
    }

    [Fact]
    public async Task An_operation_returning_no_task_faults_its_run_instead_of_hanging()
    {
        await using var loc = new Locality(0);
        await Assert.ThrowsAsync<InvalidOperationException>(() => loc.RunAsync((Func<Task>)(() => null!)).WaitAsync(T));
        await Assert.ThrowsAsync<InvalidOperationException>(() => loc.RunAsync((Func<Task<int>>)(() => null!)).WaitAsync(T));
        Assert.Equal(0, loc.Faults);
    }
}
