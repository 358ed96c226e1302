using Motr.Runtime;

namespace Motr.Be.Tests.Api;

/// <summary>The locality's public methods refuse misuse at the call, naming the parameter, and it keeps running.</summary>
public class LocalityContractTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);

    /// <summary>What the call itself throws (not its task).</summary>
    private static ArgumentNullException Thrown(Func<Task> call) =>
        Assert.IsType<ArgumentNullException>(Record.Exception(() => { _ = call(); }));

    [Fact]
    public async Task Null_delegates_are_refused_at_the_call_naming_the_parameter()
    {
        await using var loc = new Locality(0);
        // Before: each returned a task that faulted later, in the turn, with a NullReferenceException (Post queued the
        // null and the turn counted a fault).
        Assert.Equal("operation", Thrown(() => loc.RunAsync((Func<Task>)null!)).ParamName);
        Assert.Equal("operation", Thrown(() => loc.RunAsync((Func<Task<int>>)null!)).ParamName);
        Assert.Equal("action", Thrown(() => loc.RunAsync((Action)null!)).ParamName);
        Assert.Equal("func", Thrown(() => loc.RunAsync((Func<int>)null!)).ParamName);
        Assert.Equal("callback", Assert.Throws<ArgumentNullException>(() => loc.Post(null!, null)).ParamName);
        Assert.Equal("segment", Assert.Throws<ArgumentNullException>(() => loc.Attach(null!)).ParamName);
        Assert.Null(loc.Segment); // nothing half-attached
        Assert.Equal(3, await loc.RunAsync(() => 3).WaitAsync(T));
        Assert.Equal(0, loc.Faults);
    }
}
