"""What a layout study produced (`hybrid-nas study`): its directory format (`study_directory`), the
readings taken off each run's curve (`readings`), the rankings against the CoAtNet paper's with
Kendall's tau-b and bootstrap intervals (`rankings`), and the offline HTML report (`report`)."""
