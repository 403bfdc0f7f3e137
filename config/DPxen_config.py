# The original integration's configuration file, which dpxen reads as it is.
# Backup the virtual machines Debian and vm2 in hot mode, creating a debug file.
Mode = "online"
url = http://tpc227.company.com
username = "user"
password = "myPassword"
vmName = ["Debian", "vm2"]
debug = True
sr = ""
