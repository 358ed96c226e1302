namespace Motr.Be.Tests.TestSupport;

/// <summary>Runs code on a thread that is no locality's, for the tests of what is refused off a segment's owner thread.</summary>
public static class Threads
{
    /// <summary>Runs <paramref name="op"/> on a thread of its own and waits for it (no await: the caller's turn goes on); returns what it threw.</summary>
    public static Exception? OffThread(Action op)
    {
        Exception? thrown = null;
        var t = new Thread(() => thrown = Record.Exception(op));
        t.Start();
        t.Join();
        return thrown;
    }
}
