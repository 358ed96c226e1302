using Motr.Cli;

return await MotrCommand.RunAsync(args, Console.Out, Console.Error);
