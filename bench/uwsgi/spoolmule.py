# uWSGI's programmed mule for the spooler benchmark.
import spoolbench

spoolbench.mule_main()
